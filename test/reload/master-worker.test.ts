/**
 * Issue 13: HAProxy in master-worker mode (`haproxy -W -S ...`, what Debian 12's
 * haproxy.service runs as `-Ws`), reloaded the way operators reload it, SIGUSR2 to the
 * master, under load in a fresh network namespace (this kernel: nfqueue). The master
 * re-executes and its new worker takes the listening socket over (`-x sockpair@N`):
 * the socket is never closed, so there is no race for a hold to cover.
 *
 * Each run: 40 reloads, each over when the master CLI lists the new worker; load from
 * the project's generator (50 closed-loop clients) and `ab -r` (8) beside it.
 *   1. unprotected: `kill -USR2 MASTER`;
 *   2. `synhold protect --release-on swap -- kill -USR2 MASTER`: before the hand-over
 *      rule (release-policy.ts) every one of these held until max-hold, 5 s;
 *   3. `synhold protect -- kill -USR2 MASTER`, the default rule the README gives for
 *      master-worker: released at kill's exit.
 * Oracles besides the generator: ab's counts, `ss -ltnpe` after every reload (the
 * listener's inode and holder against `show proc` on the master CLI), and the
 * namespace's TcpExt/Tcp counters. Numbers: docs/OPERATIONS.md, "master-worker, measured".
 *
 * The second test turns the hand-over off (`-x /dev/null`, HAProxy's switch; how, on 2.6.12:
 * NO_TRANSFER_WRAPPER in the experiment): each new worker binds a listener of its own (a new
 * inode every reload, the worker's argv says `-x /dev/null`) and the old worker's closes after
 * kill has returned. Four runs: unprotected (the race, counted: it must show); `--release-on
 * swap` (released when the old listener is gone); the default rule, which releases at kill's
 * exit, before anything happened, and loses nothing only because `synhold setup` turned on
 * net.ipv4.tcp_migrate_req (the closing listener's queue moves to the new one); and
 * `--release-on swap` after `setup --migrate-req off`, the hold alone.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withNetns } from '../helpers/netns.js';
import { runMasterWorkerIn, type MasterWorkerResult } from '../helpers/master-worker-experiment.js';

const RELOADS = 40;
const RUN = { reloads: RELOADS, intervalMs: 300, concurrency: 50, abConcurrency: 8, deadlineMs: 60_000 };

function describe(r: MasterWorkerResult): string {
  const ready = r.reloads.map((x) => x.readyMs).sort((a, b) => a - b);
  const holds = r.protects.map((p) => p.holdMs).sort((a, b) => a - b);
  const q = (v: number[], p: number) => (v.length ? v[Math.min(v.length - 1, Math.floor(p * v.length))]!.toFixed(1) : '-');
  return (
    `${r.reloads.length} reloads in ${r.elapsedMs} ms (new worker listed p50 ${q(ready, 0.5)} max ${q(ready, 1)} ms); ` +
    `loadgen ${r.requests} requests, ${r.failed} failed ${JSON.stringify(r.details)}, latency p50 ${r.latencyMs.p50} p99 ${r.latencyMs.p99} max ${r.latencyMs.max} ms; ` +
    `ab ${JSON.stringify(r.ab)}; netstat ${JSON.stringify(r.netstat)}` +
    `; ss: the new worker alone ${q(
      r.reloads.map((x) => x.ssMs).sort((a, b) => a - b),
      1,
    )} ms after ready at most` +
    (holds.length
      ? `; holds p50 ${q(holds, 0.5)} max ${q(holds, 1)} ms, hand-over seen p50 ${q(
          r.protects.flatMap((p) => (p.timeline.handover ? [p.timeline.handover.ms] : [])).sort((a, b) => a - b),
          0.5,
        )} ms, SYNs released per hold p50 ${q(
          r.protects.map((p) => p.released).sort((a, b) => a - b),
          0.5,
        )}, causes ${JSON.stringify(count(r.protects.map((p) => p.releaseCause)))}`
      : '')
  );
}

const count = (xs: string[]) => xs.reduce<Record<string, number>>((a, x) => ((a[x] = (a[x] ?? 0) + 1), a), {});

/**
 * What every run must show, protected or not: each reload happened, the new worker alone holds one
 * listener, and that listener is the very socket from the first reload on (socket transfer) or a new
 * one every reload (transfer off, which the new worker's argv must show).
 */
function assertReloads(r: MasterWorkerResult, what: string): void {
  assert.equal(r.reloads.length, RELOADS, `${what}: only ${r.reloads.length} reloads before the deadline`);
  const bad = r.reloads.filter((x) => !x.ok);
  assert.equal(bad.length, 0, `${what}: reloads failed: ${JSON.stringify(bad.slice(0, 3))}`);
  const inode = r.reloads[0]!.ssInodes;
  for (const [i, x] of r.reloads.entries()) {
    assert.equal(x.ssInodes.length, 1, `${what}: reload ${i}: one listener (ss): ${JSON.stringify(x.ssInodes)}`);
    const argv = x.newWorkerArgv.join(' ');
    if (r.socketTransfer) {
      // The fd hand-over, by ss: the very socket from the first reload on.
      assert.deepEqual(x.ssInodes, inode, `${what}: reload ${i}: the listener's inode changed (ss)`);
      assert.match(argv, / -x sockpair@\d+ /, `${what}: reload ${i}: the new worker's argv`);
    } else {
      // No hand-over: a listener the previous reload did not have.
      if (i > 0) assert.notDeepEqual(x.ssInodes, r.reloads[i - 1]!.ssInodes, `${what}: reload ${i}: the same listener as reload ${i - 1} (ss)`);
      assert.match(argv, / -x \/dev\/null /, `${what}: reload ${i}: the new worker's argv`);
      assert.doesNotMatch(argv, /sockpair@/, `${what}: reload ${i}: the new worker's argv`);
    }
    assert.equal(x.newWorkers.length, 1, `${what}: reload ${i}: show proc lists ${JSON.stringify(x.newWorkers)}`);
    assert.deepEqual(
      x.ssPids,
      x.newWorkers,
      `${what}: reload ${i}: ss shows the listener held by ${JSON.stringify(x.ssPids)}, show proc's worker is ${x.newWorkers}`,
    );
    assert.ok(!x.oldWorkers.includes(x.newWorkers[0]!), `${what}: reload ${i}: no new worker`);
  }
  assert.ok(r.requests > 5_000, `${what}: only ${r.requests} requests`);
  assert.ok(r.ab && r.ab.complete > 500, `${what}: ab: ${JSON.stringify(r.ab)}`);
}

/** Each reload happened (assertReloads) and nothing was lost: no client failure, no kernel drop. */
function assertReloadsAndNoLoss(r: MasterWorkerResult, what: string): void {
  assertReloads(r, what);
  assert.equal(r.failed, 0, `${what}: the load generator counted failures: ${JSON.stringify(r.details)} ${JSON.stringify(r.outcomes)}`);
  assert.ok(r.ab);
  assert.equal(r.ab.failed, 0, `${what}: ab counted failures: ${JSON.stringify(r.ab)}`);
  assertNoQueueLoss(r, what);
}

/** No socket error at ab and no SYN or connection dropped by a listen queue (the kernel's counters). */
function assertNoQueueLoss(r: MasterWorkerResult, what: string): void {
  assert.ok(r.ab);
  assert.deepEqual(r.ab.errors, [], `${what}: ab's socket errors`);
  for (const k of ['TcpExt.ListenDrops', 'TcpExt.ListenOverflows', 'TcpExt.TCPReqQFullDrop', 'Tcp.AttemptFails'] as const)
    assert.equal(r.netstat[k], 0, `${what}: ${k} moved by ${r.netstat[k]}`);
}

test(`HAProxy master-worker, ${RELOADS} SIGUSR2 reloads under load: unprotected, the fd hand-over loses nothing; protect --release-on swap releases at the hand-over; the default rule at kill's exit`, async (t) => {
  await withNetns(async (ns) => {
    const plain = runMasterWorkerIn(ns.name, { protect: false, ...RUN });
    t.diagnostic(`${plain.haproxyVersion}`);
    t.diagnostic(`unprotected: ${describe(plain)}`);
    assertReloadsAndNoLoss(plain, 'unprotected');

    const swap = runMasterWorkerIn(ns.name, { protect: true, releaseOn: 'swap', ...RUN });
    t.diagnostic(`protect --release-on swap: ${describe(swap)}`);
    assertReloadsAndNoLoss(swap, '--release-on swap');
    assert.equal(swap.protects.length, RELOADS, 'one --report line per reload');
    for (const [i, p] of swap.protects.entries()) {
      const x = swap.reloads[i]!;
      assert.equal(p.exitCode, 0, `reload ${i}: protect exited ${p.exitCode}`);
      // Released by the hand-over rule, by protect itself, long before max-hold (5 s).
      assert.equal(p.releaseCause, 'reload-done', `reload ${i}: ${p.releaseReason}`);
      assert.equal(p.releasedBy, 'owner');
      assert.match(p.releaseReason, /^port 16000: sk:\S+ handed over from pid \d+ to pid \d+ \(same socket\)$/);
      assert.ok(p.holdMs < 2000, `reload ${i}: held ${p.holdMs} ms`);
      assert.equal(p.drops, 0);
      // protect saw the new worker take the socket: the pid show proc and ss name.
      const h = p.timeline.handover;
      assert.ok(h, `reload ${i}: no hand-over in the timeline: ${JSON.stringify(p.timeline)}`);
      assert.deepEqual(h.from, x.oldWorkers, `reload ${i}: hand-over from ${h.from}, show proc's old worker ${x.oldWorkers}`);
      assert.ok(h.to.includes(x.newWorkers[0]!), `reload ${i}: hand-over to ${h.to}, show proc's new worker ${x.newWorkers}`);
      assert.ok(
        h.to.every((pid) => pid === x.newWorkers[0] || pid === swap.masterPid),
        `reload ${i}: hand-over to ${h.to}: neither the new worker nor the master`,
      );
      assert.ok(p.timeline.releaseSentMs >= h.ms, `reload ${i}: released before the hand-over`);
      assert.equal(p.timeline.newListenerMs, undefined, `reload ${i}: sock_diag saw a new listener: not a hand-over`);
    }

    const dflt = runMasterWorkerIn(ns.name, { protect: true, releaseOn: 'sockets', ...RUN });
    t.diagnostic(`protect (default rule): ${describe(dflt)}`);
    assertReloadsAndNoLoss(dflt, 'default rule');
    assert.equal(dflt.protects.length, RELOADS);
    for (const [i, p] of dflt.protects.entries()) {
      assert.equal(p.exitCode, 0);
      // kill returns at once with the same socket: released at its exit, before the hand-over.
      assert.equal(p.releaseCause, 'command-exited', `reload ${i}: ${p.releaseReason}`);
      assert.ok(p.holdMs < 1000, `reload ${i}: held ${p.holdMs} ms`);
    }
  });
});

test(`HAProxy master-worker with the socket hand-over off (-x /dev/null), ${RELOADS} SIGUSR2 reloads under load: unprotected, counted; protect --release-on swap (with and without tcp_migrate_req) loses nothing, the default rule (with it) loses at most a twentieth`, async (t) => {
  const NOX = { ...RUN, socketTransfer: false };
  await withNetns(async (ns) => {
    const plain = runMasterWorkerIn(ns.name, { protect: false, ...NOX });
    t.diagnostic(`${plain.haproxyVersion}`);
    t.diagnostic(`unprotected, no hand-over: ${describe(plain)}`);
    assertReloads(plain, 'unprotected, no hand-over');
    assert.equal(plain.migrateReq, 0, 'unprotected: tcp_migrate_req is off in a fresh namespace');
    // The control: without the hand-over the old worker's listener closes under load and resets what
    // sat in its queue (measured: 208-312 of the generator's requests per run). None here would mean the race was not exercised,
    // and the protected runs' 0 would say nothing.
    assert.ok(
      plain.failed + (plain.ab?.failed ?? 0) > 0,
      `unprotected, no hand-over: no failure: ${JSON.stringify(plain.details)} ab ${JSON.stringify(plain.ab)}`,
    );

    const swap = runMasterWorkerIn(ns.name, { protect: true, releaseOn: 'swap', ...NOX });
    t.diagnostic(`protect --release-on swap, no hand-over: ${describe(swap)}`);
    assertReloadsAndNoLoss(swap, '--release-on swap, no hand-over');
    assert.equal(swap.protects.length, RELOADS, 'one --report line per reload');
    for (const [i, p] of swap.protects.entries()) {
      assert.equal(p.exitCode, 0, `reload ${i}: protect exited ${p.exitCode}`);
      // A swap of sockets, not of processes: the new worker's listener up, the old worker's gone.
      assert.equal(p.releaseCause, 'reload-done', `reload ${i}: ${p.releaseReason}`);
      assert.match(p.releaseReason, /^port 16000: .* replaced 1 old listener$/, `reload ${i}`);
      assert.equal(p.timeline.handover, undefined, `reload ${i}: a hand-over in the timeline: ${JSON.stringify(p.timeline)}`);
      assert.ok(p.holdMs < 2000, `reload ${i}: held ${p.holdMs} ms`);
      assert.equal(p.drops, 0);
    }

    const dflt = runMasterWorkerIn(ns.name, { protect: true, releaseOn: 'sockets', ...NOX });
    t.diagnostic(`protect (default rule), no hand-over: ${describe(dflt)}`);
    // Not 0: the default rule releases at kill's exit, before any new listener, so what protects this
    // run is tcp_migrate_req alone, and migration is not lossless (the bench's migrate-req row: 2 of
    // 1,291,377 requests reset; CI's run of 5713618: 3 of ab's 18,605 here). The bound: resets only,
    // and at most a twentieth of the unprotected run's (260-350 per run). --release-on swap, above and
    // below, is the rule that loses nothing here (docs/OPERATIONS.md).
    assertReloads(dflt, 'default rule, no hand-over');
    assertNoQueueLoss(dflt, 'default rule, no hand-over');
    const lost = (r: MasterWorkerResult) => r.failed + (r.ab?.failed ?? 0);
    assert.ok(
      lost(dflt) <= Math.max(5, lost(plain) / 20),
      `default rule, no hand-over: lost ${lost(dflt)} (${JSON.stringify(dflt.details)}, ab ${JSON.stringify(dflt.ab)}) against ${lost(plain)} unprotected`,
    );
    assert.ok(
      Object.keys(dflt.details).every((k) => k === 'ECONNRESET'),
      `default rule: ${JSON.stringify(dflt.details)}`,
    );
    assert.equal(dflt.migrateReq, 1, 'setup turned tcp_migrate_req on');
    assert.equal(dflt.protects.length, RELOADS);
    for (const [i, p] of dflt.protects.entries()) {
      assert.equal(p.exitCode, 0);
      // kill returns before the new listener exists, with the same socket as before: released at its
      // exit, so what kept this run whole is the migration of the closing listener's queue.
      assert.equal(p.releaseCause, 'command-exited', `reload ${i}: ${p.releaseReason}`);
      assert.equal(p.timeline.newListenerMs, undefined, `reload ${i}: released after a new listener: ${JSON.stringify(p.timeline)}`);
    }

    // The hold alone: no migration, every reload covered from kill to the old listener's close.
    const bare = runMasterWorkerIn(ns.name, { protect: true, releaseOn: 'swap', setupArgs: ['--migrate-req', 'off'], ...NOX });
    t.diagnostic(`protect --release-on swap, setup --migrate-req off, no hand-over: ${describe(bare)}`);
    assert.equal(bare.migrateReq, 0, 'setup --migrate-req off left tcp_migrate_req off');
    assertReloadsAndNoLoss(bare, '--release-on swap, --migrate-req off, no hand-over');
    assert.equal(bare.protects.length, RELOADS);
    for (const [i, p] of bare.protects.entries()) {
      assert.equal(p.exitCode, 0, `reload ${i}: protect exited ${p.exitCode}`);
      assert.equal(p.releaseCause, 'reload-done', `reload ${i}: ${p.releaseReason}`);
      assert.match(p.releaseReason, /^port 16000: .* replaced 1 old listener$/, `reload ${i}`);
      assert.ok(p.holdMs < 2000, `reload ${i}: held ${p.holdMs} ms`);
    }
  });
});
