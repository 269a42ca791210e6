/**
 * How short can a hold be? (docs/PROTECT.md, issue 9.) HAProxy 2.6 in front of nginx ("pong") on
 * 16000, a closed-loop client (a new TCP connection per request), and `haproxy -D -sf` reloads, each
 * under one of these holds, driven here in-process so that when the hold begins is the variable:
 *
 *   none          no hold at all (the race as is)
 *   full          held from before CMD starts until the swap (protect's hold today)
 *   new-listener  armed before CMD (queue socket open), held from the first poll that sees a new
 *                 listener on the port until the swap
 *   delay:N       armed before CMD, held from N ms after CMD's start until the swap
 *
 * "The swap": a new listener seen by a dump and every old listener freed, by the kernel's destroy
 * notification (sock_diag), as protect's socket rule releases; or CMD's exit, whichever is later.
 * Per reload it records, in ms from CMD's start: the new listener first seen, the old one freed,
 * CMD's exit, the hold's start and release, and the old listener's accept queue when the hold began.
 * Failed requests are placed on that timeline (before the hold, during it, after it).
 *
 * The hold is the backend's own (prepare, start, release: what HoldSession runs) without the lock and
 * watchdog, which do not change when SYNs are held. Runs in the current network namespace (start it
 * under `ip netns exec`), after `synhold setup --port 16000` there; the caller sets
 * net.ipv4.tcp_migrate_req. Prints one JSON document. Everything it starts is stopped by PID.
 *
 *   node hold-timing-study.js '{"hold":"new-listener","reloads":300,"concurrency":50}'
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { backendFor } from '../../src/backends/index.js';
import type { ActiveHold, PreparedHold } from '../../src/backends/backend.js';
import { Rtnl } from '../../src/rtnl/rtnl.js';
import { StateStore } from '../../src/protect/state.js';
import { ListenerWatcher, type Listener } from '../../src/sockdiag/inet_diag.js';
import { installSignalCleanup, startHaproxy, startNginx } from '../../bench/src/servers.js';
import { runLoad } from '../../bench/src/loadgen.js';
import { runAsScript } from './experiment-script.js';

export interface StudyOptions {
  hold: string;
  reloads: number;
  concurrency: number;
  /** Reload start to start, ms (a reload that overruns is followed at once). */
  intervalMs?: number;
  /** Socket poll: ms between dumps; 0: back to back (setImmediate), the finest this side of the kernel. */
  pollMs?: number;
  deadlineMs?: number;
}

export interface ReloadTimeline {
  /** All in ms from CMD's start. */
  newSeenMs?: number;
  oldFreedMs?: number;
  exitMs: number;
  holdBeganMs?: number;
  /** When the backend's start returned: the kernel holds from here at the latest (a request begun
   * between holdBeganMs and this may have reached the listener before the hold was in place). */
  holdOnMs?: number;
  releasedMs?: number;
  /** Connections queued (completed, not accepted) on the old listener(s) when the hold began. */
  oldQueuedAtHold?: number;
  /** SYNs the hold released. */
  released?: number;
  /** Epoch ms of CMD's start (to place failures). */
  at: number;
}

const PORT = 16000;
const now = () => performance.timeOrigin + performance.now();

/** TcpExt and Tcp counters of this namespace (/proc/net is per namespace). */
export function kernelCounters(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const file of ['/proc/net/netstat', '/proc/net/snmp']) {
    const lines = readFileSync(file, 'utf8').trim().split('\n');
    for (let i = 0; i + 1 < lines.length; i += 2) {
      const names = lines[i]!.split(/\s+/);
      const values = lines[i + 1]!.split(/\s+/);
      const prefix = names[0]!.replace(':', '');
      for (let k = 1; k < names.length; k++) out[`${prefix}.${names[k]}`] = Number(values[k]);
    }
  }
  return out;
}

const WATCHED = [
  'Tcp.OutRsts',
  'Tcp.AttemptFails',
  'TcpExt.TCPMigrateReqSuccess',
  'TcpExt.TCPMigrateReqFailure',
  'TcpExt.ListenOverflows',
  'TcpExt.ListenDrops',
  'TcpExt.TCPAbortOnClose',
  'TcpExt.TCPAbortOnData',
  'TcpExt.TCPReqQFullDrop',
];

function counterDelta(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  return Object.fromEntries(WATCHED.map((k) => [k, (b[k] ?? 0) - (a[k] ?? 0)]));
}

/** One reload under the chosen hold. */
async function oneReload(o: StudyOptions, watcher: ListenerWatcher, reload: () => Promise<unknown>, arm: () => Promise<PreparedHold>): Promise<ReloadTimeline> {
  const before = await watcher.list([PORT]);
  const oldCookies = new Set(before.map((l) => l.cookie));
  const prepared = o.hold === 'none' ? undefined : await arm();
  let active: ActiveHold | undefined;
  const t0 = now();
  const ms = () => now() - t0;
  const tl: Partial<ReloadTimeline> & { at: number } = { at: t0 };
  const freed = new Set<string>();
  const unwatch = watcher.watchDestroyed(oldCookies, (s) => {
    freed.add(s.cookie);
    if (freed.size === oldCookies.size && tl.oldFreedMs === undefined) tl.oldFreedMs = ms();
  });
  const queued = (ls: readonly Listener[]) => ls.filter((l) => oldCookies.has(l.cookie)).reduce((a, l) => a + l.backlog.queued, 0);
  // The old listeners' queue when the hold began: from the dump in hand, else the poll's next one
  // (one dump at a time per socket: a second answers EBUSY).
  const begin = async (nowListeners?: readonly Listener[]) => {
    if (active || !prepared) return;
    tl.holdBeganMs = ms();
    active = await prepared.start();
    tl.holdOnMs = ms();
    if (nowListeners) tl.oldQueuedAtHold = queued(nowListeners);
  };
  if (o.hold === 'full') await begin(before);
  const delay = o.hold.startsWith('delay:') ? Number(o.hold.slice(6)) : undefined;
  const timer = delay !== undefined ? setTimeout(() => void begin(), delay) : undefined;
  const cmd = reload().finally(() => (tl.exitMs = ms()));
  const limit = t0 + 5000;
  try {
    while (now() < limit) {
      const cur = await watcher.list([PORT]);
      if (active && tl.oldQueuedAtHold === undefined) tl.oldQueuedAtHold = queued(cur);
      if (tl.newSeenMs === undefined && cur.some((l) => !oldCookies.has(l.cookie))) {
        tl.newSeenMs = ms();
        if (o.hold === 'new-listener') await begin(cur);
      }
      const swapped = tl.newSeenMs !== undefined && (tl.oldFreedMs !== undefined || (oldCookies.size > 0 && !cur.some((l) => oldCookies.has(l.cookie))));
      if (swapped && tl.oldFreedMs === undefined) tl.oldFreedMs = ms();
      // Release at the swap, as protect's socket rule does (a delayed hold not begun by then holds nothing).
      if (swapped) break;
      if (o.pollMs === 0) await new Promise((r) => setImmediate(r));
      else await sleep(o.pollMs ?? 1);
    }
  } finally {
    clearTimeout(timer);
    unwatch?.();
    if (active) {
      const r = await active.release();
      tl.releasedMs = ms();
      tl.released = r.released;
    }
    prepared?.close();
    await cmd;
  }
  return tl as ReloadTimeline;
}

export async function runStudy(o: StudyOptions): Promise<unknown> {
  installSignalCleanup();
  const deadline = Date.now() + (o.deadlineMs ?? 10 * 60_000);
  const nginx = await startNginx({ workers: 1 });
  const hap = await startHaproxy({ backendPort: nginx.port, port: PORT });
  const rt = Rtnl.open();
  const watcher = ListenerWatcher.open({});
  try {
    const setup = StateStore.for(undefined).readSetup();
    if (!setup && o.hold !== 'none') throw new Error('run `synhold setup --port 16000` in this namespace first');
    const arm = () => backendFor(setup!.backend).prepare(setup!.backendState, { rt });
    const abort = new AbortController();
    const k0 = kernelCounters();
    const load = runLoad({
      host: '127.0.0.1',
      port: PORT,
      mode: 'closed',
      concurrency: o.concurrency,
      durationMs: Math.max(1000, deadline - Date.now()),
      deadlineMs: Math.max(2000, deadline - Date.now() + 10_000),
      requestTimeoutMs: 10_000,
      timeline: { limit: 100_000, failuresOnly: true },
      signal: abort.signal,
    });
    await sleep(500);
    const reloads: ReloadTimeline[] = [];
    for (let i = 0; i < o.reloads && Date.now() < deadline; i++) {
      const start = Date.now();
      reloads.push(await oneReload(o, watcher, () => hap.reload(), arm));
      const rest = (o.intervalMs ?? 100) - (Date.now() - start);
      if (rest > 0) await sleep(rest);
    }
    await sleep(500);
    abort.abort();
    const l = await load;
    const k1 = kernelCounters();
    const failures = (l.timeline ?? [])
      .filter((t) => t.outcome !== 'ok')
      .map((t) => placeFailure(l.startedAt + t.startMs, t.latencyMs, t.detail ?? t.outcome, reloads));
    return {
      options: o,
      migrateReq: readFileSync('/proc/sys/net/ipv4/tcp_migrate_req', 'utf8').trim(),
      backend: setup?.backend ?? 'none',
      requests: l.requests,
      failed: l.failed,
      details: l.details,
      kernel: counterDelta(k0, k1),
      reloads,
      failures,
    };
  } finally {
    watcher.close();
    rt.close();
    await hap.stop().catch(() => undefined);
    await nginx.stop().catch(() => undefined);
  }
}

/** A failed request on the reload timeline: which reload it overlapped and where its failure fell. */
function placeFailure(startedAt: number, latencyMs: number, detail: string, reloads: readonly ReloadTimeline[]) {
  const endedAt = startedAt + latencyMs;
  // The last reload that began before the failure (the load's clock is Date.now(): about 1 ms).
  let r: ReloadTimeline | undefined;
  for (const x of reloads) if (x.at <= endedAt + 1) r = x;
  if (!r) return { detail, reload: null, startedAt, endedAt };
  return { detail, reload: reloads.indexOf(r), startMs: round(startedAt - r.at), endMs: round(endedAt - r.at), timeline: r };
}

const round = (x: number) => Math.round(x * 100) / 100;

runAsScript(import.meta.url, runStudy);
