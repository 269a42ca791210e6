/**
 * The seed's experiment on a kernel with sch_plug (inside the kernel lab): real
 * HAProxy 2.6 in front of nginx "pong", a new TCP connection per request, and
 * `haproxy -f CFG -p PIDFILE -D -sf $(cat PIDFILE)` every 100 ms, without and
 * with `synhold protect`. Failures are counted from the client's side.
 *
 * The lab has one slow CPU shared by the load, the servers and synhold, so the
 * load is lighter than on the host and reloads come slower than every 100 ms
 * (each reload starts as soon as the previous one ended when it overruns).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withNetns } from '../helpers/netns.js';
import { describeResult, runExperimentIn, type ExperimentResult } from '../helpers/reload-experiment.js';
import { describeCause } from '../../src/protect/hold/cause.js';

/** protect's summary for a hold that a safety net ended (max-hold, a process of the hold gone): none may, in a healthy reload. */
const SAFETY_NET = new Set((['max-hold', 'owner-gone', 'watchdog-gone', 'recovered'] as const).map((kind) => describeCause({ kind })));

function safetyNetReleases(r: ExperimentResult): number {
  return r.holds.filter((h) => SAFETY_NET.has(h.reason)).length;
}

/** How many holds ended for each reason (the socket rule's reasons folded into one). */
function reasons(r: ExperimentResult): Record<string, number> {
  const out: Record<string, number> = {};
  for (const h of r.holds) {
    const k = h.reason.startsWith('port ') ? 'socket rule' : h.reason;
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}

/*
 * --max-hold 30s: on this one slow CPU, shared with the load and the servers, a
 * reload can take seconds; the default 5 s bound would release mid-reload.
 *
 * 40 reloads each way, not 200: a protected reload takes ~3 s in the lab on CI's
 * 2-core EPYC, so 200 + 200 ran past 25 minutes. The claim is per reload (no
 * request fails in any protected reload), and the race still shows unprotected at
 * 40 (13 resets in 40 unprotected reloads on CI's machine). Each run also has a
 * deadline of its own (8 min), far above what 40 reloads take, so a slow machine
 * fails with the reload count it reached instead of hanging the suite.
 */
const RELOADS = 40;
const RUN_DEADLINE_MS = 8 * 60_000;

test(
  `HAProxy reloads under load: unprotected requests fail; with synhold protect (plug) none fail over ${RELOADS} reloads`,
  { timeout: 20 * 60_000 },
  async (t) => {
    await withNetns(async (ns) => {
      const plain = runExperimentIn(
        ns.name,
        { protect: false, reloads: RELOADS, intervalMs: 100, concurrency: 8, deadlineMs: RUN_DEADLINE_MS },
        RUN_DEADLINE_MS + 60_000,
      );
      t.diagnostic(`unprotected: ${describeResult(plain)}`);
      assert.equal(plain.reloads, RELOADS);
      assert.ok(plain.failed > 0, `the race did not show: ${describeResult(plain)}`);
      assert.equal(plain.failed, plain.outcomes.reset, 'the failures are resets, the race the seed describes');

      // With `synhold daemon` running, as a production host would: each protect then
      // only asks the daemon, which owns the hold and starts its watchdog.
      // protect's own in-process hold (with a watchdog of its own per reload) is
      // exercised under load below and on the host.
      const prot = runExperimentIn(
        ns.name,
        {
          protect: true,
          setupArgs: ['--backend', 'plug'],
          protectArgs: ['--max-hold', '30s'],
          daemon: true,
          reloads: RELOADS,
          intervalMs: 100,
          concurrency: 8,
          deadlineMs: RUN_DEADLINE_MS,
        },
        RUN_DEADLINE_MS + 60_000,
      );
      t.diagnostic(`plug via the daemon: ${describeResult(prot)}`);
      assert.equal(prot.reloads, RELOADS);
      assert.equal(prot.reloadFailures, 0);
      assert.equal(prot.holds.length, RELOADS);
      assert.equal(prot.failed, 0, `protected requests failed: ${describeResult(prot)}; release reasons ${JSON.stringify(reasons(prot))}`);
      assert.ok(
        prot.holds.every((h) => h.dropped === 0),
        'no SYN dropped at the plug limit',
      );
      assert.equal(safetyNetReleases(prot), 0, `a hold ended by a safety net: ${JSON.stringify(reasons(prot))}`);
    });
  },
);

/*
 * Two deploy jobs reloading at once, each running the operator's shell line
 * `synhold protect -- sh -c 'haproxy ... -sf $(cat PIDFILE)'`: the holds queue
 * on the lock, and each reload reads the pidfile inside its own hold.
 *
 * Sized for the one-CPU lab: two reload loops, two protects, HAProxy's old and
 * new processes and the load share it, so the load is 2 clients, not 8, and a
 * request's deadline is max-hold (30 s), not 10 s. On CI's EPYC, at 8 and then
 * 4 clients, the starved HAProxy let SYNs queue past a 10 s deadline (hold max
 * 8.8 s, then an accept queue that drained slowly): slow, not lost. The claim is
 * about serialisation - each hold intact, none cut short, none to max-hold, no
 * request reset or refused, none left waiting past the longest a hold may last;
 * the heavy load is the first test's. 20 reloads (10 per loop), since each
 * waits for the other loop's hold: 40 did not fit the 8 min deadline there (27
 * done, each about 18 s).
 */
const CONCURRENT_RELOADS = 20;
test('concurrent protects under load: zero failures, every reload held', { timeout: 20 * 60_000 }, async (t) => {
  await withNetns(async (ns) => {
    const r = runExperimentIn(
      ns.name,
      {
        protect: true,
        setupArgs: ['--backend', 'plug'],
        protectArgs: ['--max-hold', '30s'],
        shellReload: true,
        reloads: CONCURRENT_RELOADS,
        intervalMs: 100,
        concurrency: 2,
        requestTimeoutMs: 30_000,
        // A reload here waits for the other loop's hold (the lock) and then holds itself.
        reloadTimeoutMs: 90_000,
        loops: 2,
        deadlineMs: RUN_DEADLINE_MS,
      },
      RUN_DEADLINE_MS + 60_000,
    );
    const why = reasons(r);
    t.diagnostic(`two concurrent reload loops, plug: ${describeResult(r)}; release reasons ${JSON.stringify(why)}`);
    assert.equal(r.reloads, CONCURRENT_RELOADS);
    assert.equal(r.reloadFailures, 0, describeResult(r));
    assert.equal(r.holds.length, CONCURRENT_RELOADS);
    assert.equal(r.failed, 0, `${describeResult(r)}; release reasons ${JSON.stringify(why)}`);
    assert.equal(why['max-hold reached'] ?? 0, 0, 'no hold ran to max-hold');
    assert.equal(safetyNetReleases(r), 0, `no hold ended by a safety net (a watchdog or an owner gone): ${JSON.stringify(why)}`);
  });
});

/*
 * The seed's egress steering (`setup --egress-topology prio`: a prio root on lo,
 * the plug in its fourth band) must protect as the default (the clsact redirect,
 * its filters only while holding) does. protect holds in-process here (no
 * daemon), the other path than the first test's.
 */
test(`HAProxy reloads under load with --egress-topology prio: none of ${RELOADS} protected reloads fails a request`, { timeout: 12 * 60_000 }, async (t) => {
  await withNetns(async (ns) => {
    const r = runExperimentIn(
      ns.name,
      {
        protect: true,
        setupArgs: ['--backend', 'plug', '--egress-topology', 'prio'],
        protectArgs: ['--max-hold', '30s'],
        reloads: RELOADS,
        intervalMs: 100,
        concurrency: 8,
        deadlineMs: RUN_DEADLINE_MS,
      },
      RUN_DEADLINE_MS + 60_000,
    );
    const why = reasons(r);
    t.diagnostic(`plug, prio root, in-process: ${describeResult(r)}; release reasons ${JSON.stringify(why)}`);
    assert.equal(r.reloads, RELOADS);
    assert.equal(r.reloadFailures, 0, describeResult(r));
    assert.equal(r.holds.length, RELOADS);
    assert.equal(r.failed, 0, `protected requests failed: ${describeResult(r)}; release reasons ${JSON.stringify(why)}`);
    assert.ok(
      r.holds.every((h) => h.dropped === 0),
      'no SYN dropped at the plug limit',
    );
    assert.ok(
      r.holds.some((h) => h.released > 0),
      'some held SYNs were released: the redirect reached the plug',
    );
    assert.equal(safetyNetReleases(r), 0, `a hold ended by a safety net: ${JSON.stringify(why)}`);
  });
});
