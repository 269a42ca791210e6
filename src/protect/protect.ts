/**
 * `synhold protect -- CMD`: hold new connections while CMD reloads the server,
 * and release them the moment it is safe.
 *
 * When is it safe? Not "when CMD exits": `haproxy -D -sf` takes 45-60 ms, but
 * the window in which the old listener closes is under a millisecond. The
 * kernel knows better: protect polls the listening sockets of the protected
 * ports over sock_diag and asks the release policy (release-policy.ts) after
 * every poll and every event (CMD's exit, a signal, the hold ending on its own).
 *
 * The hold itself is owned by this process (or by the daemon, when one runs
 * here), with a watchdog process as its dead-man's switch (hold/session.ts).
 *
 * Exit status follows timeout(1): CMD's own; 124 if --timeout fired (after
 * releasing); 125 if synhold failed; 126 if CMD could not run; 127 if it was
 * not found; 128+N if CMD died of signal N, or protect got signal N (then CMD
 * gets it too, after the release; during the lock wait CMD never starts).
 */
import { constants as osConstants } from 'node:os';
import { checkReadyTarget, probeTcp } from './ready.js';
import { ConfigError, NotSetUpError } from '../model/errors.js';
import { ListenerWatcher, type Listener } from '../sockdiag/inet_diag.js';
import { holdViaDaemon } from './daemon-client.js';
import { describeCause, type ReleaseCause } from './hold/cause.js';
import type { HoldHandle, Released } from './hold/session.js';
import { decide, DEFAULT_SETTLE_WAIT_MS, type PolicyOptions } from './release-policy.js';
import { StateStore } from './state.js';
import type { ProtectOptions, ProtectResult } from './report.js';
import type { HoldOutcome } from './observe.js';
import { MAX_DURATION_MS } from '../model/config.js';
import { raiseToRealtime } from '../host/sched.js';
import {
  commandState,
  LoopClock,
  msSince,
  nowMs,
  ownEnd,
  releaseResult,
  runCommand,
  socketHolders,
  swapNoter,
  watchOldListeners,
  type CommandEnd,
} from './observe.js';

export const EXIT_TIMEOUT = 124;
export const EXIT_FAILED = 125;
export const EXIT_CANNOT_RUN = 126;
export const EXIT_NOT_FOUND = 127;

/** Default max-hold: long enough for a slow full restart, short enough that a stuck hold is noticed. */
export const DEFAULT_MAX_HOLD_MS = 5000;

export { DEFAULT_SETTLE_WAIT_MS };
export type { Handover, ProtectOptions, ProtectResult, StopOldReport } from './report.js';

/** A signal's number (0 if this system has none of that name): exit statuses are 128 + it. */
export function signalNumber(sig: NodeJS.Signals): number {
  return (osConstants.signals as Record<string, number>)[sig] ?? 0;
}

/** The signals protect answers by releasing first; the AbortController carries the first one. */
function trapSignals(opts: ProtectOptions): { ac: AbortController; untrap: () => void } {
  const ac = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    if (!ac.signal.aborted) ac.abort(sig);
  };
  const sigs = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  for (const s of sigs) process.on(s, onSignal);
  const onAbort = () => onSignal('SIGTERM');
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  if (opts.signal?.aborted) onSignal('SIGTERM');
  return {
    ac,
    untrap: () => {
      for (const s of sigs) process.off(s, onSignal);
      opts.signal?.removeEventListener('abort', onAbort);
    },
  };
}

/**
 * Holds new connections, runs `opts.command` (no shell), releases as soon as the
 * reload is done (the release policy: new listeners up and the old ones gone, or
 * CMD's exit), and resolves with CMD's outcome; exitCode follows timeout(1), as
 * the CLI's exit status does. Through the daemon when one runs here.
 * CLI equivalent: `synhold protect [--timeout D] [--max-hold D] [--release-on R] ... -- CMD ...`.
 */
export async function protect(opts: ProtectOptions): Promise<ProtectResult> {
  const log = opts.log ?? (() => undefined);
  if (opts.command.length === 0) throw new ConfigError('protect needs a command after --');
  checkDurations(opts);
  const store = StateStore.for(opts.netns);
  const setup = store.readSetup();
  if (!setup) throw new NotSetUpError('synhold is not set up here; run `synhold setup --port P` first');
  if (opts.ready) checkReadyTarget(setup.config, opts.ready.host, opts.ready.port);
  if (opts.stopOld) checkStopOld(opts);

  const { ac, untrap } = trapSignals(opts);
  const watcher = ListenerWatcher.open(opts.netns ? { netns: opts.netns } : {});
  const result: ProtectResult = { exitCode: EXIT_FAILED, command: { exitCode: null, signal: null }, timedOut: false };
  let hold: HoldHandle | undefined;
  const holdArgs = { maxHoldMs: opts.maxHoldMs, lockWaitMs: opts.lockWaitMs, signal: ac.signal };
  const startHold = async (): Promise<HoldHandle> => {
    // The daemon, when one runs here, holds for us; otherwise this process does.
    // The session's modules (backends, codecs) are loaded only when this process holds itself.
    hold =
      (await holdViaDaemon(opts.netns, holdArgs)) ??
      (await (await import('./hold/session.js')).HoldSession.start({ ...holdArgs, ...(opts.netns ? { netns: opts.netns } : {}), via: 'protect' }));
    log(`holding new connections to port ${setup.config.ports.join(',')} (${hold.held.backend}, watchdog pid ${hold.held.watchdogPid})`);
    return hold;
  };
  try {
    if (opts.stopOld) {
      const { holdAroundStop } = await import('./stop-old.js');
      const outcome = await holdAroundStop(startHold, { ...opts, stopOld: opts.stopOld }, watcher, setup.config.ports, ac.signal, log);
      Object.assign(result, outcome.result);
      const r = await finishCommand(result, outcome, opts, ac.signal);
      // CMD succeeded but no new server took over: the reload did not happen, and protect says so.
      if (r.stopOld?.outcome === 'not-replaced' && r.exitCode === 0) r.exitCode = EXIT_FAILED;
      return r;
    }
    let h: HoldHandle;
    try {
      h = await startHold();
    } catch (e) {
      // A signal during the lock wait: nothing was held and CMD never starts.
      if (ac.signal.aborted) return { ...result, exitCode: 128 + signalNumber(ac.signal.reason as NodeJS.Signals) };
      throw e;
    }
    // Raised from the hold's start to its release, the release included (host/sched.ts).
    const lease = opts.priority === 'normal' ? undefined : raiseToRealtime();
    if (lease?.reason) log(`holding at normal priority: ${lease.reason}`);
    let outcome: HoldOutcome;
    try {
      outcome = await holdWhileCommandRuns(h, opts, watcher, setup.config.ports, ac.signal, log);
    } finally {
      lease?.restore();
    }
    Object.assign(result, outcome.result);
    if (lease) result.priority = { realtime: lease.realtime, reason: lease.reason };
    return await finishCommand(result, outcome, opts, ac.signal);
  } catch (e) {
    // Whatever failed, nothing may stay held (the watchdog covers a failure of this, too).
    if (hold) await hold.release({ kind: 'error', message: (e as Error).message }).catch(() => undefined);
    throw e;
  } finally {
    untrap();
    watcher.close();
  }
}

/** Runs CMD under the hold, polls the sockets, and releases when the policy (or a signal, the timeout, the hold's own end) says so. */
async function holdWhileCommandRuns(
  hold: HoldHandle,
  opts: ProtectOptions,
  watcher: ListenerWatcher,
  ports: readonly number[],
  signal: AbortSignal,
  log: (l: string) => void,
): Promise<HoldOutcome> {
  const holdStart = process.hrtime.bigint();
  const before: Listener[] = await watcher.list(ports);
  // --release-on swap: who holds the sockets, for a hand-over (release-policy.ts). Read
  // before CMD starts; later only while the sockets are the very ones from before.
  const holders = opts.releaseOn === 'swap' && before.length > 0 ? new HolderScan(before) : undefined;
  const { child, ended } = runCommand(opts);
  const clock = new LoopClock();
  let commandEnd: CommandEnd | undefined;
  let holdEnded: Released | undefined;
  void ended.then((c) => {
    commandEnd = c;
    clock.poke();
  });
  void hold.done.then((r) => {
    holdEnded = r;
    clock.poke();
  });
  signal.addEventListener('abort', () => clock.poke(), { once: true });
  const policy: PolicyOptions = { releaseOn: opts.releaseOn ?? 'sockets', settleWaitMs: opts.settleWaitMs ?? DEFAULT_SETTLE_WAIT_MS, ports };
  const timeoutAt = opts.timeoutMs ? Date.now() + opts.timeoutMs : Infinity;
  let readyOk = !opts.ready;
  let settledPolls = 0;
  let cause: ReleaseCause | undefined;
  const timeline: Omit<NonNullable<ProtectResult['timeline']>, 'releaseSentMs'> = {};
  const noteSwap = swapNoter(timeline, before);
  const oldListeners = watchOldListeners(watcher, before, clock, opts.destroyEvents !== false);
  try {
    while (!cause && !holdEnded) {
      cause = ownEnd(signal, timeoutAt);
      if (!cause) {
        clock.polling();
        const now = await watcher.list(ports);
        noteSwap(now, msSince(holdStart));
        const c = commandEnd;
        const command = commandState(c);
        if (!readyOk && opts.ready && (settledPolls > 0 || c)) readyOk = await probeTcp(opts.ready.host, opts.ready.port, 50);
        const held = holders?.observe(now);
        if (held && timeline.handover === undefined && held.change) timeline.handover = { ms: msSince(holdStart), ...held.change };
        const observation = { before, now, settledPolls, readyOk, oldGoneConfirmed: oldListeners.allFreed() };
        const d = decide({ ...observation, ...(command ? { command } : {}), ...(held ? { holders: held.holders } : {}) }, policy);
        if ('release' in d) cause = d.release;
        else {
          settledPolls = d.settled ? settledPolls + 1 : 0;
          // The first settled poll without the kernel's destroy notification wants a second dump
          // (one dump is not an atomic snapshot), not a second poll interval: dump again at once.
          // The notification comes through a workqueue, so on a busy host it often trails the
          // dump, and a 1 ms sleep there was the release-after-swap gap's tail (several ms when
          // the loop waits for a CPU: docs/BENCHMARKS.md). Only once: a settled state that still
          // waits (for --ready, say) polls at the interval again.
          if (settledPolls !== 1) await clock.sleep(opts.pollMs ?? 1);
        }
      }
    }
  } finally {
    oldListeners.close();
  }
  // Release first, always (a hold that ended on its own reports how).
  const releaseSentMs = msSince(holdStart);
  const r = holdEnded ?? (await hold.release(cause!));
  log(`released after ${r.durationMs.toFixed(1)} ms: ${describeCause(r.cause)}`);
  return { child, ended, holdStart, result: { timedOut: cause?.kind === 'timeout', ...releaseResult(r, hold.held), timeline: { ...timeline, releaseSentMs } } };
}

/**
 * The holders of the listeners from before the hold, read again while they are still the
 * very same sockets. A scan walks every process's fds (~5 ms for 800 fds here), so it runs
 * at most every max(HOLDER_SCAN_MS, twice its last cost), not at every 1 ms poll: the
 * socket stays open across a hand-over, so seeing it a few ms late puts no one at risk.
 */
const HOLDER_SCAN_MS = 10;
class HolderScan {
  private readonly inodes: Set<number>;
  private readonly before: Map<number, number[]>;
  private readonly running = new Set<number>();
  private now: Map<number, number[]>;
  private nextAt = 0;
  private readonly key: string;
  constructor(before: readonly Listener[]) {
    this.inodes = new Set(before.map((l) => l.inode));
    this.key = before
      .map((l) => l.cookie)
      .sort()
      .join(',');
    this.before = socketHolders(this.inodes, this.running);
    this.now = this.before;
  }
  observe(now: readonly Listener[]): {
    holders: { before: Map<number, number[]>; now: Map<number, number[]>; running: Set<number> };
    change?: { from: number[]; to: number[] };
  } {
    const same =
      now
        .map((l) => l.cookie)
        .sort()
        .join(',') === this.key;
    // process.hrtime, not performance.now(): node:perf_hooks is a module load (about 1 ms) on every protect.
    const t = nowMs();
    if (same && t >= this.nextAt) {
      this.now = socketHolders(this.inodes);
      const end = nowMs();
      this.nextAt = end + Math.max(HOLDER_SCAN_MS, 2 * (end - t));
    }
    const flat = (m: Map<number, number[]>) => [...new Set([...m.values()].flat())].sort((a, b) => a - b);
    const from = flat(this.before);
    const to = flat(this.now);
    const change = to.length > 0 && !to.some((p) => this.running.has(p)) ? { from, to } : undefined;
    return { holders: { before: this.before, now: this.now, running: this.running }, ...(change ? { change } : {}) };
  }
}

/** After the release: pass a signal on, enforce --timeout, wait for CMD, and map its end to protect's exit status. */
async function finishCommand(result: ProtectResult, o: HoldOutcome, opts: ProtectOptions, signal: AbortSignal): Promise<ProtectResult> {
  const { child, ended } = o;
  // A signal (or an abort) passes on to CMD and ends protect with 128+N, whether it comes during the
  // hold or after it (max-hold over, CMD still running): after, too, it must not be swallowed.
  const passOn = (): ProtectResult => {
    const sig = signal.reason as NodeJS.Signals;
    child?.kill(sig);
    if (child) result.command = { exitCode: null, signal: sig };
    result.exitCode = 128 + signalNumber(sig);
    return result;
  };
  if (signal.aborted) return passOn();
  let killTimer: NodeJS.Timeout | undefined;
  const kill = () => {
    result.timedOut = true;
    child?.kill('SIGTERM');
    killTimer = setTimeout(() => child?.kill('SIGKILL'), 2000);
  };
  // The hold is over; CMD may still be running (e.g. a foreground server start).
  const remaining = opts.timeoutMs ? Number(o.holdStart / 1_000_000n) + opts.timeoutMs - Number(process.hrtime.bigint() / 1_000_000n) : Infinity;
  const timer = result.timedOut ? (kill(), undefined) : Number.isFinite(remaining) ? setTimeout(kill, Math.max(0, remaining)) : undefined;
  let onAbort: () => void = () => undefined;
  const aborted = new Promise<'aborted'>((resolve) => signal.addEventListener('abort', (onAbort = () => resolve('aborted')), { once: true }));
  const ce = await Promise.race([ended, aborted]);
  signal.removeEventListener('abort', onAbort);
  clearTimeout(timer);
  clearTimeout(killTimer);
  if (ce === 'aborted') return passOn();
  result.command = { exitCode: ce.code, signal: ce.signal, ...(ce.error ? { error: ce.error.message } : {}) };
  result.commandMs = Number(ce.at - o.holdStart) / 1e6;
  if (result.timedOut) result.exitCode = EXIT_TIMEOUT;
  else if (ce.error) result.exitCode = ce.error.code === 'ENOENT' ? EXIT_NOT_FOUND : EXIT_CANNOT_RUN;
  else if (ce.signal) result.exitCode = 128 + signalNumber(ce.signal);
  else result.exitCode = ce.code ?? EXIT_FAILED;
  return result;
}

/** Durations have documented maximums (model/config.ts): past them a timer would overflow or a hold outlive its purpose. */
function checkDurations(opts: ProtectOptions): void {
  const check = (name: string, v: number | undefined, min: number) => {
    if (v === undefined) return;
    if (!Number.isFinite(v) || v < min || v > MAX_DURATION_MS[name as keyof typeof MAX_DURATION_MS])
      throw new ConfigError(`${name} must be between ${min} ms and ${MAX_DURATION_MS[name as keyof typeof MAX_DURATION_MS]} ms, not ${v}`);
  };
  check('maxHold', opts.maxHoldMs, 1);
  check('lockWait', opts.lockWaitMs, 0);
  check('timeout', opts.timeoutMs, 1);
  check('settleWait', opts.settleWaitMs, 0);
  check('poll', opts.pollMs, 1);
}

/** --stop-old: a signal this system has, not the ones that cannot be a soft stop, and no second release rule. */
function checkStopOld(opts: ProtectOptions): void {
  const sig = opts.stopOld!;
  if (!(sig in osConstants.signals) || sig === 'SIGSTOP' || sig === 'SIGCONT')
    throw new ConfigError(`--stop-old must name a signal that stops a server (USR1 for HAProxy, QUIT for nginx), not "${sig.replace(/^SIG/, '')}"`);
  if (opts.releaseOn && opts.releaseOn !== 'sockets')
    throw new ConfigError(`--stop-old releases when the old server's listeners close; --release-on ${opts.releaseOn} does not go with it`);
}
