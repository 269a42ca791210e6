/**
 * On this machine's own kernel (no sch_plug): real HAProxy 2.6 reloaded under
 * load in a fresh network namespace, protected with the nfqueue backend, and the
 * drop baseline. Failures are counted from the client's side.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withNetns } from '../helpers/netns.js';
import { synhold } from '../helpers/cli.js';
import { describeResult, runExperimentIn } from '../helpers/reload-experiment.js';

test('auto picks nfqueue on this kernel, saying why, and its steering: while-holding by default, the always-on rule when asked', async () => {
  await withNetns(async (ns) => {
    const r = synhold(['--netns', ns.name, 'setup', '--port', '16000']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /backend nfqueue .*auto: no plug: missing sch_plug.*; steering while-holding \(this kernel takes the hold table/);
    assert.doesNotMatch(ns.exec('iptables-save', ['-t', 'raw']), /NFQUEUE/, 'nothing in the path between holds');
    assert.equal(synhold(['--netns', ns.name, 'teardown']).status, 0);
    const a = synhold(['--netns', ns.name, 'setup', '--port', '16000', '--steering', 'always']);
    assert.equal(a.status, 0, a.stderr);
    assert.match(a.stdout, /; steering always$/m);
    const rules = ns.exec('iptables-save', ['-t', 'raw']);
    assert.match(rules, /--dport 16000 .*-j NFQUEUE --queue-num 7001 --queue-bypass/);
    assert.equal(synhold(['--netns', ns.name, 'teardown']).status, 0);
    assert.doesNotMatch(ns.exec('iptables-save', ['-t', 'raw']), /synhold/);
  });
});

test('HAProxy reloaded every 100 ms under load: unprotected loses requests, nfqueue-protected loses none over 200 reloads', async (t) => {
  await withNetns(async (ns) => {
    const plain = runExperimentIn(ns.name, { protect: false, reloads: 200, intervalMs: 100, concurrency: 50 });
    t.diagnostic(`unprotected: ${describeResult(plain)}`);
    assert.equal(plain.reloads, 200);
    const prot = runExperimentIn(ns.name, { protect: true, setupArgs: ['--backend', 'nfqueue'], reloads: 200, intervalMs: 100, concurrency: 50 });
    t.diagnostic(`nfqueue: ${describeResult(prot)}`);
    assert.equal(prot.reloads, 200);
    assert.equal(prot.reloadFailures, 0);
    assert.equal(prot.holds.length, 200, 'every reload was held and released');
    assert.equal(prot.failed, 0, `protected requests failed: ${JSON.stringify(prot.details)}`);
    assert.ok(prot.requests > 10_000, `only ${prot.requests} requests`);
  });
});

// The hold's tables come and go with each reload (an nf_tables transaction before CMD and after the
// release); the SYNs they queue must be the same ones the always-on rule queues: none may be lost.
test('HAProxy reloaded every 100 ms under load with --steering while-holding: none lost over 200 reloads; no table left', async (t) => {
  await withNetns(async (ns) => {
    const prot = runExperimentIn(ns.name, {
      protect: true,
      setupArgs: ['--backend', 'nfqueue', '--steering', 'while-holding'],
      reloads: 200,
      intervalMs: 100,
      concurrency: 50,
    });
    t.diagnostic(`nfqueue, while-holding: ${describeResult(prot)}`);
    assert.equal(prot.reloads, 200);
    assert.equal(prot.reloadFailures, 0);
    assert.equal(prot.holds.length, 200, 'every reload was held and released');
    assert.equal(prot.failed, 0, `protected requests failed: ${JSON.stringify(prot.details)}`);
    assert.ok(prot.requests > 10_000, `only ${prot.requests} requests`);
    assert.deepEqual(
      prot.holds.filter((h) => h.dropped > 0),
      [],
      'no hold dropped a SYN (the queue drop counters)',
    );
    assert.doesNotMatch(ns.exec('nft', ['list', 'tables']), /synhold-q/, 'no hold table outlived its hold');
  });
});

test('drop baseline: no request fails, but those that hit a reload take >= 1 s (a SYN retransmit)', async (t) => {
  await withNetns(async (ns) => {
    const r = runExperimentIn(ns.name, { protect: true, setupArgs: ['--backend', 'drop'], reloads: 15, intervalMs: 400, concurrency: 10 });
    t.diagnostic(`drop: ${describeResult(r)}`);
    assert.equal(r.failed, 0, JSON.stringify(r.details));
    assert.equal(r.outcomes.reset, 0);
    assert.ok(r.latencyMs.max >= 1000, `max latency ${r.latencyMs.max} ms: no request paid a retransmit`);
    assert.ok(r.latencyMs.p50 < 500, `median ${r.latencyMs.p50} ms: most requests never met a hold`);
  });
});

// Deaths and stops of the hold's processes: test/faults/nfqueue.test.ts.
