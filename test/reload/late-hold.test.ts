/**
 * Why protect's hold begins before CMD and not when the new listener appears (docs/PROTECT.md, "How
 * short can a hold be"), measured with real HAProxy 2.6 reloaded (`-D -sf`) under load in a fresh
 * namespace (this kernel: nfqueue), by test/helpers/hold-timing-study.ts. Oracles: the client's
 * outcomes and the namespace's kernel counters (/proc/net/netstat, per run).
 *   - A hold begun at the new listener, tcp_migrate_req=0: the connections that reached the old
 *     listener before it are reset when it closes. The full hold over as many reloads: none.
 *   - The same late hold with tcp_migrate_req=1: those connections are migrated (TCPMigrateReqSuccess),
 *     which is what such a hold relies on; at the seed's scale it still lost one (the study).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { withNetns, type TestNetns } from '../helpers/netns.js';
import { synhold } from '../helpers/cli.js';

interface Run {
  requests: number;
  failed: number;
  details: Record<string, number>;
  kernel: Record<string, number>;
  reloads: { holdBeganMs?: number; releasedMs?: number; newSeenMs?: number }[];
  /** Each failed request on its reload's timeline (ms from CMD's start), and that reload. */
  failures: { detail: string; startMs?: number; timeline?: { holdBeganMs?: number; holdOnMs?: number } }[];
}

/**
 * Failed requests that began before their reload's hold was in place (or in a reload whose hold never
 * began). In place means once the backend's start returned (holdOnMs), not when it was called: CI's
 * run of 5713618 had 4 of 196 late-hold losses begin in that gap, the hold asked for but not yet on.
 */
const beforeHold = (r: Run) => r.failures.filter((f) => f.startMs !== undefined && !(f.startMs >= (f.timeline?.holdOnMs ?? Infinity))).length;

const STUDY = fileURLToPath(new URL('../helpers/hold-timing-study.js', import.meta.url));

function study(ns: TestNetns, migrateReq: 0 | 1, hold: string, reloads: number): Run {
  ns.exec('sh', ['-c', `echo ${migrateReq} > /proc/sys/net/ipv4/tcp_migrate_req`]);
  const r = spawnSync('ip', ['netns', 'exec', ns.name, process.execPath, STUDY, JSON.stringify({ hold, reloads, concurrency: 50, pollMs: 1 })], {
    encoding: 'utf8',
    timeout: 10 * 60_000,
  });
  if (r.status !== 0) throw new Error(`hold-timing-study failed (${r.status ?? r.signal}): ${r.stderr}`);
  return JSON.parse(r.stdout) as Run;
}

const describe = (name: string, r: Run) => {
  const held = r.reloads.filter((x) => x.holdBeganMs !== undefined && x.releasedMs !== undefined).map((x) => x.releasedMs! - x.holdBeganMs!);
  held.sort((a, b) => a - b);
  return `${name}: ${r.requests} requests, ${r.failed} failed ${JSON.stringify(r.details)} (${beforeHold(r)} began before their hold), ${r.reloads.length} reloads, hold p50 ${held[held.length >> 1]?.toFixed(2)} ms; kernel ${JSON.stringify(r.kernel)}`;
};

async function inStudyNetns(fn: (ns: TestNetns) => void): Promise<void> {
  await withNetns(async (ns) => {
    const s = synhold(['--netns', ns.name, 'setup', '--port', '16000', '--migrate-req', 'off']);
    assert.equal(s.status, 0, s.stderr);
    try {
      fn(ns);
    } finally {
      synhold(['--netns', ns.name, 'teardown']);
    }
  });
}

// On a quiet machine the full hold lost none (0 in 300 reloads, docs/PROTECT.md); on a starved one it can
// lose connections that were queued on the old listener before it began (setup's tcp_migrate_req=1 is
// for those), so the oracle is where each failure began, and that the late hold loses more.
test('tcp_migrate_req=0, 100 reloads each: a hold begun at the new listener loses the requests that reached the old listener before it, more than the full hold', async (t) => {
  await inStudyNetns((ns) => {
    const late = study(ns, 0, 'new-listener', 100);
    t.diagnostic(describe('new-listener', late));
    const full = study(ns, 0, 'full', 100);
    t.diagnostic(describe('full', full));
    assert.equal(late.reloads.length, 100);
    assert.equal(full.reloads.length, 100);
    assert.ok(late.failed > 0, 'the late hold lost nothing: the race was not exercised');
    assert.deepEqual(Object.keys(late.details), ['ECONNRESET']);
    // Ordering, not speed: each late hold began once its poll had seen the new listener (how soon after
    // depends on the machine's load: over 1 ms in a CI run on a busy machine, so it is a diagnostic).
    assert.ok(
      late.reloads.every((x) => x.holdBeganMs !== undefined && x.newSeenMs !== undefined && x.holdBeganMs >= x.newSeenMs),
      'each late hold began after the poll that saw the new listener',
    );
    t.diagnostic(`late hold began after the new listener was seen: max ${Math.max(...late.reloads.map((x) => x.holdBeganMs! - x.newSeenMs!)).toFixed(2)} ms`);
    assert.equal(beforeHold(late), late.failed, 'a late hold lost a request that began after it');
    assert.equal(beforeHold(full), full.failed, 'the full hold lost a request that began after it');
    assert.ok(late.failed > full.failed, `late ${late.failed}, full ${full.failed}`);
    assert.equal(late.kernel['TcpExt.TCPMigrateReqSuccess'], 0);
    assert.equal(full.kernel['TcpExt.TCPMigrateReqSuccess'], 0);
  });
});

test('tcp_migrate_req=1, 100 reloads: a hold begun at the new listener relies on migrating what the old listener had queued', async (t) => {
  await inStudyNetns((ns) => {
    const late = study(ns, 1, 'new-listener', 100);
    t.diagnostic(describe('new-listener', late));
    assert.equal(late.reloads.length, 100);
    assert.ok(late.kernel['TcpExt.TCPMigrateReqSuccess']! > 0, 'nothing migrated');
    assert.equal(late.kernel['TcpExt.TCPMigrateReqFailure'], 0);
  });
});
