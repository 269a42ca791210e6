/**
 * The release policy (src/protect/release-policy.ts), rule by rule, as a table:
 * what protect observed (listeners before and now, CMD's end, --ready) and
 * what the policy must answer. No kernel: listeners are plain objects.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decide, decideStopOld, replacementsUp, type Observation, type PolicyOptions, type StopOldObservation } from '../../src/protect/release-policy.js';
import type { Listener } from '../../src/sockdiag/inet_diag.js';

function l(port: number, cookie: string, family: 'inet' | 'inet6' = 'inet', inode = 1): Listener {
  return {
    family,
    address: family === 'inet' ? '127.0.0.1' : '::1',
    port,
    inode,
    uid: 0,
    cookie,
    backlog: { queued: 0, max: 128 },
    boundDev: 0,
  } as unknown as Listener;
}

const opts: PolicyOptions = { releaseOn: 'sockets', settleWaitMs: 2000, ports: [80] };
/**
 * Who held each socket (by inode) when the hold began, and now: `held([[1, [402]]], [[1, [615]]])`;
 * running when the hold began: the master (391), the holders then, and `alsoRunning`.
 */
const held = (before: [number, number[]][], now: [number, number[]][], alsoRunning: number[] = []) => ({
  before: new Map(before),
  now: new Map(now),
  running: new Set([391, ...before.flatMap(([, pids]) => pids), ...alsoRunning]),
});
const exited = (ms = 0, failed = false) => ({ failed, msSinceExit: ms });

const ROWS: { rule: string; o: Observation; opts?: Partial<PolicyOptions>; want: string }[] = [
  {
    rule: 'socket swap, seen once: wait for a second poll',
    o: { before: [l(80, 'a')], now: [l(80, 'b')], settledPolls: 0, readyOk: true },
    want: 'wait settled',
  },
  { rule: 'socket swap, seen twice: release', o: { before: [l(80, 'a')], now: [l(80, 'b')], settledPolls: 1, readyOk: true }, want: 'release reload-done' },
  {
    rule: 'socket swap seen once, the kernel reported the old listener freed: release (no second poll)',
    o: { before: [l(80, 'a')], now: [l(80, 'b')], settledPolls: 0, readyOk: true, oldGoneConfirmed: true },
    want: 'release reload-done',
  },
  {
    rule: 'CMD exited 0, socket swap seen once with the kernel confirming: released as after the exit',
    o: { before: [l(80, 'a')], now: [l(80, 'b')], settledPolls: 0, readyOk: true, oldGoneConfirmed: true, command: exited(5) },
    want: 'release command-exited',
  },
  {
    rule: '--release-on swap, CMD exited, socket swap seen once with the kernel confirming: release',
    o: { before: [l(80, 'a')], now: [l(80, 'b')], settledPolls: 0, readyOk: true, oldGoneConfirmed: true, command: exited(5) },
    opts: { releaseOn: 'swap' },
    want: 'release reload-done',
  },
  {
    rule: 'old listener freed (kernel), no new listener yet: wait',
    o: { before: [l(80, 'a')], now: [], settledPolls: 0, readyOk: true, oldGoneConfirmed: true },
    want: 'wait',
  },
  {
    rule: 'old listener freed (kernel), --ready not answering: wait',
    o: { before: [l(80, 'a')], now: [l(80, 'b')], settledPolls: 0, readyOk: false, oldGoneConfirmed: true },
    want: 'wait settled',
  },
  {
    rule: 'socket swap but --ready not answering: wait',
    o: { before: [l(80, 'a')], now: [l(80, 'b')], settledPolls: 3, readyOk: false },
    want: 'wait settled',
  },
  { rule: 'new listener up, old still open: wait', o: { before: [l(80, 'a')], now: [l(80, 'a'), l(80, 'b')], settledPolls: 0, readyOk: true }, want: 'wait' },
  { rule: 'fd hand-over (same sockets) while CMD runs: wait', o: { before: [l(80, 'a')], now: [l(80, 'a')], settledPolls: 0, readyOk: true }, want: 'wait' },
  {
    rule: 'fd hand-over, CMD exited 0: release at exit',
    o: { before: [l(80, 'a')], now: [l(80, 'a')], settledPolls: 0, readyOk: true, command: exited() },
    want: 'release command-exited',
  },
  {
    rule: 'full restart, nothing listening yet, CMD exited: wait',
    o: { before: [l(80, 'a')], now: [], settledPolls: 0, readyOk: true, command: exited(100) },
    want: 'wait',
  },
  {
    rule: 'full restart, listener back after CMD exited: release',
    o: { before: [l(80, 'a')], now: [l(80, 'b')], settledPolls: 1, readyOk: true, command: exited(100) },
    want: 'release reload-done',
  },
  {
    rule: 'CMD failed: release at once',
    o: { before: [l(80, 'a')], now: [l(80, 'a')], settledPolls: 0, readyOk: true, command: exited(0, true) },
    want: 'release command-failed',
  },
  {
    rule: 'two ports, CMD restarted the service of one (swapped) and left the other (same socket): released at the exit',
    o: { before: [l(80, 'a'), l(81, 'c')], now: [l(80, 'a'), l(81, 'd')], settledPolls: 0, readyOk: true, command: exited(5) },
    opts: { ports: [80, 81] },
    want: 'release command-exited',
  },
  {
    rule: 'two ports, one swapped, the other with a new listener beside its old: wait (--settle-wait)',
    o: { before: [l(80, 'a'), l(81, 'c')], now: [l(80, 'a'), l(80, 'b'), l(81, 'd')], settledPolls: 0, readyOk: true, command: exited(5) },
    opts: { ports: [80, 81] },
    want: 'wait',
  },
  {
    rule: 'two ports, one untouched, the other not yet listening again: wait',
    o: { before: [l(80, 'a'), l(81, 'c')], now: [l(80, 'a')], settledPolls: 0, readyOk: true, command: exited(5) },
    opts: { ports: [80, 81] },
    want: 'wait',
  },
  {
    rule: 'orphaned old listener within --settle-wait: wait',
    o: { before: [l(80, 'a')], now: [l(80, 'a'), l(80, 'b')], settledPolls: 0, readyOk: true, command: exited(500) },
    want: 'wait',
  },
  {
    rule: 'orphaned old listener past --settle-wait: release, saying so',
    o: { before: [l(80, 'a')], now: [l(80, 'a'), l(80, 'b')], settledPolls: 0, readyOk: true, command: exited(2500) },
    want: 'release command-exited',
  },
  {
    rule: 'a port nobody served before the hold is not waited for',
    o: { before: [l(80, 'a')], now: [l(80, 'a')], settledPolls: 0, readyOk: true, command: exited() },
    opts: { ports: [80, 81] },
    want: 'release command-exited',
  },
  {
    rule: 'dual stack: the IPv4 listener swapped, the IPv6 one not yet: wait',
    o: { before: [l(80, 'a'), l(80, 'b', 'inet6')], now: [l(80, 'c'), l(80, 'b', 'inet6')], settledPolls: 1, readyOk: true },
    want: 'wait',
  },
  {
    rule: 'dual stack: both families swapped: release',
    o: { before: [l(80, 'a'), l(80, 'b', 'inet6')], now: [l(80, 'c'), l(80, 'd', 'inet6')], settledPolls: 1, readyOk: true },
    want: 'release reload-done',
  },
  {
    rule: '--release-on exit ignores the sockets while CMD runs',
    o: { before: [l(80, 'a')], now: [l(80, 'b')], settledPolls: 5, readyOk: true },
    opts: { releaseOn: 'exit' },
    want: 'wait',
  },
  {
    rule: '--release-on exit releases at the exit',
    o: { before: [l(80, 'a')], now: [l(80, 'b')], settledPolls: 0, readyOk: true, command: exited() },
    opts: { releaseOn: 'exit' },
    want: 'release command-exited',
  },
  {
    rule: '--release-on swap: CMD returned early (kill -USR2), sockets unchanged: wait',
    o: { before: [l(80, 'a')], now: [l(80, 'a')], settledPolls: 0, readyOk: true, command: exited(5000) },
    opts: { releaseOn: 'swap' },
    want: 'wait',
  },
  {
    rule: '--release-on swap: new listener beside the old, long after the exit: wait (no --settle-wait)',
    o: { before: [l(80, 'a')], now: [l(80, 'a'), l(80, 'b')], settledPolls: 0, readyOk: true, command: exited(5000) },
    opts: { releaseOn: 'swap' },
    want: 'wait',
  },
  {
    rule: '--release-on swap: the swap, seen twice, after the exit: release',
    o: { before: [l(80, 'a')], now: [l(80, 'b')], settledPolls: 1, readyOk: true, command: exited(300) },
    opts: { releaseOn: 'swap' },
    want: 'release reload-done',
  },
  // HAProxy master-worker: the re-executed master hands the very socket to the new worker
  // (-x sockpair@N). Before the hand-over rule, swap waited for an "old gone" that never came:
  // every reload held until max-hold (5 s, released by the watchdog; measured on HAProxy 2.6.12).
  {
    rule: '--release-on swap: same socket, still held by the old worker: wait',
    o: { before: [l(80, 'a')], now: [l(80, 'a')], settledPolls: 0, readyOk: true, command: exited(50), holders: held([[1, [402]]], [[1, [402]]]) },
    opts: { releaseOn: 'swap' },
    want: 'wait',
  },
  {
    rule: '--release-on swap: same socket, old worker and new worker both hold it: wait',
    o: { before: [l(80, 'a')], now: [l(80, 'a')], settledPolls: 3, readyOk: true, command: exited(50), holders: held([[1, [402]]], [[1, [402, 615]]]) },
    opts: { releaseOn: 'swap' },
    want: 'wait',
  },
  {
    rule: '--release-on swap: same socket handed over to a new process, seen once: wait',
    o: { before: [l(80, 'a')], now: [l(80, 'a')], settledPolls: 0, readyOk: true, command: exited(50), holders: held([[1, [402]]], [[1, [615]]]) },
    opts: { releaseOn: 'swap' },
    want: 'wait settled',
  },
  {
    rule: '--release-on swap: same socket handed over, seen twice: release',
    o: { before: [l(80, 'a')], now: [l(80, 'a')], settledPolls: 1, readyOk: true, command: exited(50), holders: held([[1, [402]]], [[1, [615]]]) },
    opts: { releaseOn: 'swap' },
    want: 'release reload-done',
  },
  {
    rule: '--release-on swap: handed over before CMD exits (the hand-over is the reload): release',
    o: { before: [l(80, 'a')], now: [l(80, 'a')], settledPolls: 1, readyOk: true, holders: held([[1, [402]]], [[1, [615]]]) },
    opts: { releaseOn: 'swap' },
    want: 'release reload-done',
  },
  {
    rule: '--release-on swap: handed over but --ready not answering: wait',
    o: { before: [l(80, 'a')], now: [l(80, 'a')], settledPolls: 3, readyOk: false, command: exited(50), holders: held([[1, [402]]], [[1, [615]]]) },
    opts: { releaseOn: 'swap' },
    want: 'wait settled',
  },
  {
    // Back-to-back reloads: the previous reload's worker (615) takes the socket over during its
    // start, after the master listed it; seen from the next hold, that is not this reload's hand-over.
    rule: '--release-on swap: held now only by a process that was already running (the previous reload finishing): wait',
    o: {
      before: [l(80, 'a')],
      now: [l(80, 'a')],
      settledPolls: 3,
      readyOk: true,
      command: exited(50),
      holders: held([[1, [402]]], [[1, [615]]], [615]),
    },
    opts: { releaseOn: 'swap' },
    want: 'wait',
  },
  {
    rule: '--release-on swap: held by the re-executed master (same pid, running before): wait',
    o: { before: [l(80, 'a')], now: [l(80, 'a')], settledPolls: 3, readyOk: true, command: exited(50), holders: held([[1, [402]]], [[1, [391]]]) },
    opts: { releaseOn: 'swap' },
    want: 'wait',
  },
  {
    rule: '--release-on swap: nobody held the socket before (unreadable /proc): no hand-over, wait',
    o: { before: [l(80, 'a')], now: [l(80, 'a')], settledPolls: 3, readyOk: true, command: exited(50), holders: held([], [[1, [615]]]) },
    opts: { releaseOn: 'swap' },
    want: 'wait',
  },
  {
    rule: '--release-on swap: nobody holds the socket now: wait',
    o: { before: [l(80, 'a')], now: [l(80, 'a')], settledPolls: 3, readyOk: true, command: exited(50), holders: held([[1, [402]]], []) },
    opts: { releaseOn: 'swap' },
    want: 'wait',
  },
  {
    rule: "--release-on swap: two sockets, one handed over, the other still the old worker's: wait",
    o: {
      before: [l(80, 'a', 'inet', 1), l(80, 'b', 'inet6', 2)],
      now: [l(80, 'a', 'inet', 1), l(80, 'b', 'inet6', 2)],
      settledPolls: 3,
      readyOk: true,
      command: exited(50),
      holders: held(
        [
          [1, [402]],
          [2, [402]],
        ],
        [
          [1, [615]],
          [2, [402]],
        ],
      ),
    },
    opts: { releaseOn: 'swap' },
    want: 'wait',
  },
  {
    rule: '--release-on swap: a new listener beside the handed-over one: not a hand-over (the socket rule decides): wait',
    o: {
      before: [l(80, 'a')],
      now: [l(80, 'a'), l(80, 'b', 'inet', 2)],
      settledPolls: 3,
      readyOk: true,
      command: exited(50),
      holders: held([[1, [402]]], [[1, [615]]]),
    },
    opts: { releaseOn: 'swap' },
    want: 'wait',
  },
  {
    rule: 'default rule: holders are not consulted (same sockets while CMD runs): wait',
    o: { before: [l(80, 'a')], now: [l(80, 'a')], settledPolls: 3, readyOk: true, holders: held([[1, [402]]], [[1, [615]]]) },
    want: 'wait',
  },
  {
    rule: '--release-on swap: CMD failed: release at once',
    o: { before: [l(80, 'a')], now: [l(80, 'a')], settledPolls: 0, readyOk: true, command: exited(0, true) },
    opts: { releaseOn: 'swap' },
    want: 'release command-failed',
  },
];

for (const row of ROWS) {
  test(`release policy: ${row.rule}`, () => {
    const d = decide(row.o, { ...opts, ...row.opts });
    const got = 'release' in d ? `release ${d.release.kind}` : `wait${d.settled ? ' settled' : ''}`;
    assert.equal(got, row.want);
  });
}

test('release policy: a hand-over names the socket and both processes', () => {
  const d = decide(
    { before: [l(80, 'a')], now: [l(80, 'a')], settledPolls: 1, readyOk: true, command: exited(50), holders: held([[1, [402]]], [[1, [615]]]) },
    { ...opts, releaseOn: 'swap' },
  );
  assert.ok('release' in d && d.release.kind === 'reload-done');
  assert.equal((d.release as { detail: string }).detail, 'port 80: sk:a handed over from pid 402 to pid 615 (same socket)');
});

test('release policy: the reason names the rule that fired', () => {
  const d = decide({ before: [l(80, 'a')], now: [l(80, 'a'), l(80, 'b')], settledPolls: 0, readyOk: true, command: exited(2500) }, opts);
  assert.ok('release' in d && d.release.kind === 'command-exited');
  assert.match((d.release as { detail?: string }).detail ?? '', /--settle-wait\): not closing/);
});

// --stop-old (src/protect/stop-old.ts): when to stop the old server, before anything is held.
const STOP_OLD: { rule: string; o: StopOldObservation; ports?: number[]; want: string }[] = [
  { rule: 'no new listener yet, CMD running: wait', o: { before: [l(80, 'a')], now: [l(80, 'a')], readyOk: true }, want: 'wait' },
  { rule: 'a new listener beside the old one, CMD running: stop', o: { before: [l(80, 'a')], now: [l(80, 'a'), l(80, 'b')], readyOk: true }, want: 'stop' },
  {
    rule: 'a new listener beside the old one, CMD exited 0: stop',
    o: { before: [l(80, 'a')], now: [l(80, 'a'), l(80, 'b')], readyOk: true, command: exited(3) },
    want: 'stop',
  },
  {
    rule: 'a new listener, --ready not answering yet: wait',
    o: { before: [l(80, 'a')], now: [l(80, 'a'), l(80, 'b')], readyOk: false, command: exited(3) },
    want: 'wait',
  },
  {
    rule: 'CMD failed (a bad configuration): leave the old server, as failed',
    o: { before: [l(80, 'a')], now: [l(80, 'a')], readyOk: true, command: exited(0, true) },
    want: 'leave failed',
  },
  {
    rule: 'CMD failed after its new listener appeared: still leave the old server',
    o: { before: [l(80, 'a')], now: [l(80, 'a'), l(80, 'b')], readyOk: false, command: exited(0, true) },
    want: 'leave failed',
  },
  {
    rule: 'CMD exited 0, no new listener yet, within --settle-wait: wait',
    o: { before: [l(80, 'a')], now: [l(80, 'a')], readyOk: true, command: exited(1999) },
    want: 'wait',
  },
  {
    rule: 'CMD exited 0, no new listener --settle-wait later: leave the old server, not replaced',
    o: { before: [l(80, 'a')], now: [l(80, 'a')], readyOk: true, command: exited(2000) },
    want: 'leave not-replaced',
  },
  {
    rule: 'dual-stack: only the IPv4 listener is new: wait for IPv6',
    o: { before: [l(80, 'a'), l(80, 'b', 'inet6', 2)], now: [l(80, 'a'), l(80, 'b', 'inet6', 2), l(80, 'c')], readyOk: true, command: exited(3) },
    want: 'wait',
  },
  {
    rule: 'dual-stack: both families have a new listener: stop',
    o: {
      before: [l(80, 'a'), l(80, 'b', 'inet6', 2)],
      now: [l(80, 'a'), l(80, 'b', 'inet6', 2), l(80, 'c'), l(80, 'd', 'inet6', 4)],
      readyOk: true,
    },
    want: 'stop',
  },
  {
    rule: 'two ports: a new listener on one only: wait',
    o: { before: [l(80, 'a'), l(443, 'b')], now: [l(80, 'a'), l(443, 'b'), l(80, 'c')], readyOk: true },
    ports: [80, 443],
    want: 'wait',
  },
  {
    rule: 'a port nobody served before is not waited for',
    o: { before: [l(80, 'a')], now: [l(80, 'a'), l(80, 'c')], readyOk: true },
    ports: [80, 443],
    want: 'stop',
  },
  {
    rule: 'start guard: the new listener up but not yet polled: wait',
    o: { before: [l(80, 'a')], now: [l(80, 'a'), l(80, 'b')], readyOk: true, serving: { now: false, upForMs: 30 } },
    want: 'wait',
  },
  {
    rule: 'start guard: the new listener polled: stop',
    o: { before: [l(80, 'a')], now: [l(80, 'a'), l(80, 'b')], readyOk: true, serving: { now: true, upForMs: 30 } },
    want: 'stop',
  },
  {
    rule: 'start guard: never seen polled (a server without epoll), --settle-wait after it was up: stop',
    o: { before: [l(80, 'a')], now: [l(80, 'a'), l(80, 'b')], readyOk: true, serving: { now: false, upForMs: 2000 } },
    want: 'stop',
  },
  {
    rule: 'start guard: polled but --ready does not answer yet: wait',
    o: { before: [l(80, 'a')], now: [l(80, 'a'), l(80, 'b')], readyOk: false, serving: { now: true, upForMs: 30 } },
    want: 'wait',
  },
  {
    rule: 'start guard: CMD failed while the new server was not yet polled: leave the old server',
    o: { before: [l(80, 'a')], now: [l(80, 'a'), l(80, 'b')], readyOk: true, serving: { now: false, upForMs: 30 }, command: exited(0, true) },
    want: 'leave failed',
  },
  {
    rule: 'the old listener gone and a new one up (CMD stopped it itself): stop (nothing left to signal but harmless)',
    o: { before: [l(80, 'a')], now: [l(80, 'c')], readyOk: true },
    want: 'stop',
  },
];

for (const row of STOP_OLD) {
  test(`stop-old policy: ${row.rule}`, () => {
    const d = decideStopOld(row.o, { ports: row.ports ?? [80], settleWaitMs: 2000 });
    const got = 'stop' in d ? 'stop' : 'leave' in d ? `leave ${d.commandFailed ? 'failed' : 'not-replaced'}` : 'wait';
    assert.equal(got, row.want);
  });
}

test('stop-old policy, start guard: the reason says whether the new server was seen polling, or for how long it was not', () => {
  const up = { before: [l(80, 'a')], now: [l(80, 'a'), l(80, 'b')], readyOk: true };
  const polled = decideStopOld({ ...up, serving: { now: true, upForMs: 12 } }, { ports: [80], settleWaitMs: 2000 });
  assert.ok('stop' in polled);
  assert.equal(polled.stop, 'new listener up on inet 127.0.0.1 port 80 and polled');
  const never = decideStopOld({ ...up, serving: { now: false, upForMs: 2004.4 } }, { ports: [80], settleWaitMs: 2000 });
  assert.ok('stop' in never);
  assert.equal(never.stop, 'new listener up on inet 127.0.0.1 port 80, not seen polled in 2004 ms (--settle-wait; a server without epoll?)');
});

test('stop-old policy: the reason names what is still missing, by family and address', () => {
  const r = replacementsUp([l(80, 'a'), l(80, 'b', 'inet6', 2)], [l(80, 'a'), l(80, 'b', 'inet6', 2), l(80, 'c')], [80]);
  assert.deepEqual(r, { up: false, reason: 'no new listener yet on inet6 ::1 port 80' });
  const d = decideStopOld({ before: [l(80, 'a')], now: [l(80, 'a')], readyOk: true, command: exited(2500) }, { ports: [80], settleWaitMs: 2000 });
  assert.ok('leave' in d);
  assert.match(d.leave, /^the command exited but no new listener yet on inet 127\.0\.0\.1 port 80 2500 ms later \(--settle-wait\)$/);
});
