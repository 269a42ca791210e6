/**
 * `synhold protect -- CMD`: hold new connections while CMD reloads the server,
 * and release them the moment it is safe.
 *
 * When is it safe? Not "when CMD exits": `haproxy -D -sf` takes 45-60 ms, but
 * the window in which the old listener closes is under a millisecond. The
 * kernel knows better: protect polls the listening sockets of the protected
 * ports over sock_diag and releases as soon as a new listener is up and every
 * listener that existed at the start of the hold is gone. CMD's exit is the
 * fallback (fd hand-over with `haproxy -x` keeps the same socket, so the
 * socket rule never fires). A full restart (stop, then start) has no listener
 * at all for a while: protect keeps holding until one appears, up to --max-hold.
 *
 * Exit status follows timeout(1): CMD's own; 124 if --timeout fired (after
 * releasing); 125 if synhold failed; 126 if CMD could not run; 127 if it was
 * not found; 128+N if CMD died of signal N.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { backendFor } from '../backends/index.js';
import { requirePrograms } from '../host/programs.js';
import { checkReadyTarget, probeTcp } from './ready.js';
import { SynholdError } from '../model/errors.js';
import { netnsPath } from '../netlink/socket.js';
import { Rtnl } from '../rtnl/rtnl.js';
import { ListenerWatcher, reloadSettled, type Listener } from '../sockdiag/inet_diag.js';
import { startHolder, type HoldHandle } from './holder.js';
import { holdViaDaemon } from './daemon-client.js';
import { StateStore } from './state.js';

export const EXIT_TIMEOUT = 124;
export const EXIT_FAILED = 125;
export const EXIT_CANNOT_RUN = 126;
export const EXIT_NOT_FOUND = 127;

export interface ProtectOptions {
  command: string[];
  netns?: string;
  /** Kill CMD and exit 124 after this long (the hold is released first). */
  timeoutMs?: number;
  /** No hold lasts longer than this, whatever happens. */
  maxHoldMs: number;
  /** How long to wait for another protect's hold to end. */
  lockWaitMs: number;
  /** Release only once this address accepts a connection (one that does not pass through the hold). */
  ready?: { host: string; port: number };
  /** Socket poll interval while holding. */
  pollMs?: number;
  /**
   * 'sockets' (default): release when the listening sockets say the reload is
   * done, or at CMD's exit, whichever comes first. 'exit': only at CMD's exit
   * (for comparison, and for servers whose reload the socket rule cannot see).
   */
  releaseOn?: 'sockets' | 'exit';
  /**
   * After CMD exits, how long to keep holding while a new listener is up and an
   * old one is still open (the old process closing late). Bounded by maxHoldMs.
   */
  settleWaitMs?: number;
  /** Called with progress lines (for --verbose). */
  log?: (line: string) => void;
}

export interface ProtectResult {
  exitCode: number;
  /** CMD's own outcome. */
  command: { exitCode: number | null; signal: NodeJS.Signals | null; error?: string };
  timedOut: boolean;
  holdMs?: number;
  released?: number;
  drops?: number;
  /** Why the hold ended: `new listener up, old gone`, `command exited`, `max-hold reached`, ... */
  releaseReason?: string;
  /** From hold start to CMD's exit. */
  commandMs?: number;
}

/** Default max-hold: long enough for a slow full restart, short enough that a stuck hold is noticed. */
export const DEFAULT_MAX_HOLD_MS = 5000;

/**
 * Default settle-wait. `haproxy -sf` signals the old process before the command
 * exits, so an old listener still open then normally closes within milliseconds
 * (tens on a loaded one-CPU lab). One that outlives this is not closing: an
 * orphan left by two reloads that raced on the pidfile, or a -sf that named the
 * wrong pids. Holding new clients on its account until max-hold helps nobody.
 */
export const DEFAULT_SETTLE_WAIT_MS = 2000;

function signalNumber(sig: NodeJS.Signals): number {
  return (osConstants.signals as Record<string, number>)[sig] ?? 0;
}

export async function protect(opts: ProtectOptions): Promise<ProtectResult> {
  const log = opts.log ?? (() => undefined);
  if (opts.command.length === 0) throw new SynholdError('ERR_BAD_INPUT', 'protect needs a command after --');
  const store = StateStore.for(opts.netns);
  const setup = store.readSetup();
  if (!setup) throw new SynholdError('ERR_NOT_SET_UP', 'synhold is not set up here; run `synhold setup --port P` first');
  if (opts.ready) checkReadyTarget(setup.config, opts.ready.host, opts.ready.port);
  // Before the hold: without nsenter, CMD could not run in the namespace and the
  // spawn's ENOENT would read as "CMD not found" (127).
  if (opts.netns) requirePrograms(['nsenter'], `to run CMD inside network namespace ${opts.netns}`);

  const watcher = ListenerWatcher.open(opts.netns ? { netns: opts.netns } : {});
  const ports = setup.config.ports;
  let holder: HoldHandle | undefined;
  let child: ChildProcess | undefined;
  const result: ProtectResult = { exitCode: EXIT_FAILED, command: { exitCode: null, signal: null }, timedOut: false };

  // Signals: release first, then pass the signal on to CMD and exit 128+N.
  let interrupted: NodeJS.Signals | undefined;
  let wake: () => void = () => undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    interrupted = sig;
    wake();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);

  try {
    // The daemon, when one runs here, holds without a process to start;
    // otherwise a holder is forked for this hold.
    holder =
      (await holdViaDaemon(opts.netns, { maxHoldMs: opts.maxHoldMs, lockWaitMs: opts.lockWaitMs })) ??
      startHolder({
        ...(opts.netns ? { netns: opts.netns } : {}),
        maxHoldMs: opts.maxHoldMs,
        lockWaitMs: opts.lockWaitMs,
        owner: 'ipc',
      });
    const held = await holder.held;
    const holdStart = process.hrtime.bigint();
    log(`holding new connections to port ${ports.join(',')} (${held.backend}, via ${holder.kind})`);

    const before: Listener[] = await watcher.list(ports);
    const servedBefore = [...new Set(before.map((l) => l.port))];
    const socketsKey = (ls: readonly Listener[]) =>
      ls
        .map((l) => l.cookie)
        .sort()
        .join(',');
    const beforeKey = socketsKey(before);

    // Run CMD. No shell: argv as given.
    let commandExit: { code: number | null; signal: NodeJS.Signals | null; error?: NodeJS.ErrnoException } | undefined;
    let commandExitAt: bigint | undefined;
    // With --netns, CMD runs inside that namespace too (a reload must bind
    // there). nsenter execs CMD in place, so its exit status, 126/127 for a
    // command that cannot run, and death by signal all pass through unchanged.
    const argv = opts.netns ? ['nsenter', `--net=${netnsPath(opts.netns)}`, '--', ...opts.command] : opts.command;
    child = spawn(argv[0]!, argv.slice(1), { stdio: 'inherit' });
    const commandDone = new Promise<void>((resolve) => {
      child!.once('error', (error: NodeJS.ErrnoException) => {
        commandExit = { code: null, signal: null, error };
        commandExitAt = process.hrtime.bigint();
        resolve();
        wake();
      });
      child!.once('exit', (code, signal) => {
        commandExit ??= { code, signal };
        commandExitAt = process.hrtime.bigint();
        resolve();
        wake();
      });
    });

    let holderGone = false;
    void holder.gone.then(() => {
      holderGone = true;
      wake();
    });

    const timeoutAt = opts.timeoutMs ? Date.now() + opts.timeoutMs : Infinity;
    const pollMs = opts.pollMs ?? 1;
    const settleWaitMs = opts.settleWaitMs ?? DEFAULT_SETTLE_WAIT_MS;
    let reason: string | undefined;
    let readyOk = !opts.ready;
    // Two settled polls in a row: one dump of the listening table is not an
    // atomic snapshot (a socket can be skipped between batches), and releasing
    // while the old listener still exists is exactly the failure we prevent.
    let settledPolls = 0;
    while (!reason) {
      if (interrupted) {
        reason = `synhold got ${interrupted}`;
        break;
      }
      if (holderGone) {
        reason = 'holder ended';
        break;
      }
      if (Date.now() >= timeoutAt) {
        result.timedOut = true;
        reason = 'timeout';
        break;
      }
      const now = await watcher.list(ports);
      const settled = opts.releaseOn === 'exit' ? { settled: false, reason: '' } : reloadSettled(before, now, ports);
      settledPolls = settled.settled ? settledPolls + 1 : 0;
      if (!readyOk && opts.ready && (settled.settled || commandExit)) readyOk = await probeTcp(opts.ready.host, opts.ready.port, 50);
      if (settledPolls >= 2 && readyOk) {
        reason = settled.reason;
        break;
      }
      if (commandExit) {
        if (commandExit.error || commandExit.code !== 0) {
          reason = 'command failed';
          break;
        }
        // CMD succeeded but the socket rule did not fire. If every port that was
        // served before the hold has a listener again (fd hand-over, or an
        // unrelated command), there is nothing to wait for. If one has none (a
        // full restart still starting up), keep holding, up to max-hold. A port
        // nobody served before the hold is not waited for: nothing was there to
        // protect, and waiting would only delay its clients.
        // Release at exit only when that is safe too: the reload settled, or the
        // sockets are exactly the ones from before (fd hand-over, or a command
        // that did not touch the server). A new listener beside a still-open old
        // one is a reload half done (the old process may close any moment, with
        // connections queued on it): keep holding, for at most --settle-wait
        // after the exit; an old listener open longer is not closing (see
        // DEFAULT_SETTLE_WAIT_MS): release, and say so.
        const listening = new Set(now.map((l) => l.port));
        if (servedBefore.every((p) => listening.has(p)) && readyOk) {
          // --release-on exit asked for exactly this moment, settled or not.
          if (opts.releaseOn === 'exit' || settled.settled || socketsKey(now) === beforeKey) {
            reason = settled.settled ? `${settled.reason}, after the command exited` : 'command exited';
            break;
          }
          const afterExitMs = Number(process.hrtime.bigint() - commandExitAt!) / 1e6;
          if (afterExitMs >= settleWaitMs) {
            reason = `command exited; ${settled.reason} ${Math.round(afterExitMs)} ms later (--settle-wait): not closing`;
            break;
          }
        }
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, pollMs);
        wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      wake = () => undefined;
    }

    // Release first, always.
    if (!holderGone) {
      const r = await holder.release(reason);
      result.holdMs = r.durationMs;
      result.released = r.released;
      result.drops = r.drops;
      result.releaseReason = r.reason;
    } else if (holder.releasedInfo) {
      // The holder released on its own (max-hold) and exited.
      const r = holder.releasedInfo;
      result.holdMs = r.durationMs;
      result.released = r.released;
      result.drops = r.drops;
      result.releaseReason = r.reason;
    } else {
      // The holder died under us: make sure nothing stays held.
      await recoverRelease(opts.netns);
      result.releaseReason = 'holder died; released by protect';
      result.holdMs = Number(process.hrtime.bigint() - holdStart) / 1e6;
    }
    log(`released after ${result.holdMs?.toFixed(1)} ms: ${result.releaseReason}`);

    if (interrupted) {
      child.kill(interrupted);
      result.exitCode = 128 + signalNumber(interrupted);
      return result;
    }
    if (result.timedOut) {
      child.kill('SIGTERM');
      const killTimer = setTimeout(() => child?.kill('SIGKILL'), 2000);
      await commandDone;
      clearTimeout(killTimer);
      result.exitCode = EXIT_TIMEOUT;
    } else {
      // The hold is over; CMD may still be running (e.g. a foreground server start).
      const remaining = timeoutAt - Date.now();
      if (!commandExit && Number.isFinite(remaining)) {
        const t = setTimeout(
          () => {
            result.timedOut = true;
            child?.kill('SIGTERM');
          },
          Math.max(0, remaining),
        );
        await commandDone;
        clearTimeout(t);
      } else {
        await commandDone;
      }
    }
    const ce = commandExit!;
    result.command = { exitCode: ce.code, signal: ce.signal, ...(ce.error ? { error: ce.error.message } : {}) };
    if (commandExitAt) result.commandMs = Number(commandExitAt - holdStart) / 1e6;
    if (result.timedOut) result.exitCode = EXIT_TIMEOUT;
    else if (ce.error) result.exitCode = ce.error.code === 'ENOENT' ? EXIT_NOT_FOUND : EXIT_CANNOT_RUN;
    else if (ce.signal) result.exitCode = 128 + signalNumber(ce.signal);
    else result.exitCode = ce.code ?? EXIT_FAILED;
    return result;
  } catch (e) {
    // Whatever failed, nothing may stay held.
    if (holder) {
      await holder.release('synhold error').catch(() => recoverRelease(opts.netns).catch(() => undefined));
    }
    throw e;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('SIGHUP', onSignal);
    watcher.close();
  }
}

/** Releases with no holder: used when a holder died, and by `synhold release` for a stale hold. */
export async function recoverRelease(netns?: string): Promise<void> {
  const store = StateStore.for(netns);
  const setup = store.readSetup();
  if (!setup) return;
  const rt = netns ? Rtnl.open({ netns }) : Rtnl.open();
  try {
    await backendFor(setup.backend).forceRelease(setup.backendState, netns ? { rt, netns } : { rt });
  } finally {
    rt.close();
  }
  const h = store.readHold();
  if (h) {
    store.removeHold();
    store.recordHold(
      { startedAt: new Date(h.since).toISOString(), durationMs: Date.now() - h.since, released: 0, drops: 0, reason: 'recovered after holder died' },
      true,
    );
  }
}
