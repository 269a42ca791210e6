// The reload loop: reload HAProxy every `intervalMs` (the seed: every 100 ms)
// while the load generator runs.
//
// WHY start-to-start scheduling: a loop that sleeps 100 ms AFTER each reload
// reloads only every 150-200 ms, because a reload itself takes 50-85 ms under
// load (issue 5). So the n-th reload is due `intervalMs` after the (n-1)-th
// STARTED; if a reload took longer than the interval, the next one starts at
// once (counted as an overrun) — never two at a time, and no catch-up burst.
// The report shows the real count and rate, not the nominal ones.
//
// Strategies hook in here: `wrap.argv` rewrites the reload command (the protect
// strategies run `synhold protect -- haproxy …`), `wrap.before` / `wrap.after`
// run around it (plug-spawn's nl-qdisc-add, drop's iptables rule). `after`
// ALWAYS runs once `before` started, even when the reload fails: a plug that
// is never released would hold every new connection of the run.
//
// Bounded: stops after `count` reloads, after `durationMs`, at the hard
// `deadlineMs`, or when `signal` aborts (the load generator finished),
// whichever first; a failing reload does not stop it (unless
// maxConsecutiveFailures is reached), because the bench must report failures,
// not hide them.

import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ReloadRecord, HaproxyServer } from './servers.js';

/** What the loop reloads: a HaproxyServer, or anything shaped like one (tests). */
export type Reloadable = Pick<HaproxyServer, 'reloadArgv' | 'reload'>;

export interface ReloadWrap {
  /** Rewrite the reload command's argv (not called when the target has no command, e.g. master-worker). */
  argv?: (argv: string[]) => string[];
  /** Runs just before each reload (e.g. plug). */
  before?: () => Promise<void>;
  /** Runs just after each reload, whatever happened (e.g. unplug). */
  after?: () => Promise<void>;
}

export interface ReloadLoopOptions {
  target: Reloadable;
  /** start-to-start interval (default 100 ms) */
  intervalMs?: number;
  /** at most this many reloads (default: unbounded, so a duration, deadline or signal must bound it) */
  count?: number;
  /** stop starting reloads after this long */
  durationMs?: number;
  /** hard deadline: no reload starts after it (default 10 min) */
  deadlineMs?: number;
  /** stop starting reloads when aborted (e.g. the load run finished) */
  signal?: AbortSignal;
  /** a plain function is taken as `{ argv: fn }` */
  wrap?: ReloadWrap | ((argv: string[]) => string[]);
  /** each of before/after is given up on after this long (default 10 s) */
  hookTimeoutMs?: number;
  /** stop after this many failed reloads in a row (default 20): a broken config
   * should not be hammered for minutes */
  maxConsecutiveFailures?: number;
  onReload?: (r: LoopReload) => void;
}

export interface LoopReload extends ReloadRecord {
  index: number;
  /** when it was due / when it started, ms since the loop's start */
  dueMs: number;
  startOffsetMs: number;
  /** before/after hook durations (ms), when hooks are set */
  beforeMs?: number;
  afterMs?: number;
  /** before-start → after-end: how long new connections were held, for hold strategies */
  holdMs: number;
  hookError?: string;
}

export interface Stats {
  count: number;
  min: number;
  mean: number;
  p50: number;
  p99: number;
  max: number;
}

export type ReloadStopReason = 'count' | 'duration' | 'deadline' | 'signal' | 'failures';

export interface ReloadLoopResult {
  reloads: LoopReload[];
  count: number;
  failed: number;
  elapsedMs: number;
  /** reloads per second over the loop's run */
  ratePerSec: number;
  /** start-to-start intervals (ms) */
  intervalMs: Stats;
  /** reload command/signal durations (ms) */
  durationMs: Stats;
  /** hold durations (ms): before-start to after-end */
  holdMs: Stats;
  /** reloads that took longer than the interval (the next one started late, at once) */
  overruns: number;
  stoppedBy: ReloadStopReason;
}

export function stats(values: number[]): Stats {
  if (values.length === 0) return { count: 0, min: 0, mean: 0, p50: 0, p99: 0, max: 0 };
  const s = [...values].sort((a, b) => a - b);
  const q = (p: number): number => s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
  const r = (x: number): number => Math.round(x * 1000) / 1000;
  return {
    count: s.length,
    min: r(s[0]!),
    mean: r(s.reduce((a, b) => a + b, 0) / s.length),
    p50: r(q(50)),
    p99: r(q(99)),
    max: r(s[s.length - 1]!),
  };
}

async function withTimeout(p: Promise<void>, ms: number, what: string): Promise<void> {
  const ac = new AbortController();
  try {
    await Promise.race([
      p,
      sleep(ms, undefined, { signal: ac.signal }).then(() => {
        throw new Error(`${what} did not finish within ${ms} ms`);
      }),
    ]);
  } finally {
    ac.abort();
  }
}

const errMsg = (e: unknown): string => (e instanceof Error ? e.message : String(e));

export async function runReloadLoop(o: ReloadLoopOptions): Promise<ReloadLoopResult> {
  const intervalMs = o.intervalMs ?? 100;
  const count = o.count ?? Number.POSITIVE_INFINITY;
  const durationMs = o.durationMs ?? Number.POSITIVE_INFINITY;
  const deadlineMs = o.deadlineMs ?? 600_000;
  const hookTimeoutMs = o.hookTimeoutMs ?? 10_000;
  const maxFails = o.maxConsecutiveFailures ?? 20;
  const wrap: ReloadWrap = typeof o.wrap === 'function' ? { argv: o.wrap } : (o.wrap ?? {});
  if (!(intervalMs >= 0)) throw new Error('intervalMs must be >= 0');

  const reloads: LoopReload[] = [];
  const t0 = performance.now();
  let due = t0;
  let consecutiveFails = 0;
  let overruns = 0;
  let stoppedBy: ReloadStopReason = 'count';

  const stopReason = (): ReloadStopReason | null => {
    const el = performance.now() - t0;
    if (o.signal?.aborted) return 'signal';
    if (reloads.length >= count) return 'count';
    if (el >= durationMs) return 'duration';
    if (el >= deadlineMs) return 'deadline';
    if (consecutiveFails >= maxFails) return 'failures';
    return null;
  };

  for (let index = 0; ; index++) {
    let why = stopReason();
    if (why) {
      stoppedBy = why;
      break;
    }
    // Sleep until due, but wake for the abort signal and never past the bounds.
    const wake = Math.min(due, t0 + durationMs, t0 + deadlineMs);
    const wait = wake - performance.now();
    if (wait > 0) {
      try {
        await sleep(wait, undefined, o.signal ? { signal: o.signal } : {});
      } catch {
        /* aborted: checked below */
      }
    }
    why = stopReason();
    if (why) {
      stoppedBy = why;
      break;
    }

    const holdStart = performance.now();
    let beforeMs: number | undefined;
    let afterMs: number | undefined;
    let hookError: string | undefined;
    let rec: ReloadRecord | undefined;
    let beforeOk = true;
    if (wrap.before) {
      try {
        await withTimeout(wrap.before(), hookTimeoutMs, 'before hook');
      } catch (e) {
        beforeOk = false;
        hookError = `before: ${errMsg(e)}`;
      }
      beforeMs = performance.now() - holdStart;
    }
    try {
      if (beforeOk) {
        const base = o.target.reloadArgv();
        const argv = base && wrap.argv ? wrap.argv(base) : undefined;
        rec = await o.target.reload(argv ? { argv } : {});
      }
    } catch (e) {
      hookError = (hookError ? `${hookError}; ` : '') + `reload: ${errMsg(e)}`;
    } finally {
      if (wrap.after) {
        const a0 = performance.now();
        try {
          await withTimeout(wrap.after(), hookTimeoutMs, 'after hook');
        } catch (e) {
          hookError = (hookError ? `${hookError}; ` : '') + `after: ${errMsg(e)}`;
        }
        afterMs = performance.now() - a0;
      }
    }
    const end = performance.now();
    const base: ReloadRecord = rec ?? {
      argv: [],
      startedAt: Date.now() - (end - holdStart),
      startMs: holdStart,
      durationMs: 0,
      exitCode: null,
      signal: null,
      error: 'not run',
      mode: 'sf',
      ok: false,
      oldPids: [],
      newPids: [],
    };
    const r: LoopReload = {
      ...base,
      ok: base.ok && hookError === undefined,
      index,
      dueMs: due - t0,
      startOffsetMs: holdStart - t0,
      holdMs: end - holdStart,
    };
    if (beforeMs !== undefined) r.beforeMs = beforeMs;
    if (afterMs !== undefined) r.afterMs = afterMs;
    if (hookError !== undefined) r.hookError = hookError;
    reloads.push(r);
    consecutiveFails = r.ok ? 0 : consecutiveFails + 1;
    o.onReload?.(r);

    // Next one is due one interval after THIS one started; if we are already
    // past that, it starts immediately (no sleeping a full interval after).
    due = holdStart + intervalMs;
    if (end > due) {
      overruns++;
      due = end;
    }
  }

  const elapsedMs = performance.now() - t0;
  const starts = reloads.map((r) => r.startOffsetMs);
  const intervals = starts.slice(1).map((s, i) => s - starts[i]!);
  return {
    reloads,
    count: reloads.length,
    failed: reloads.filter((r) => !r.ok).length,
    elapsedMs,
    ratePerSec: elapsedMs > 0 ? (reloads.length * 1000) / elapsedMs : 0,
    intervalMs: stats(intervals),
    durationMs: stats(reloads.map((r) => r.durationMs)),
    holdMs: stats(reloads.map((r) => r.holdMs)),
    overruns,
    stoppedBy,
  };
}
