/**
 * `synhold protect --stop-old SIGNAL -- CMD`: hold only around the old server's stop.
 *
 * protect's default hold covers the whole reload, from before CMD starts to the socket swap,
 * because with `haproxy -sf` the new process stops the old one itself, at a moment protect
 * cannot see coming. Most of that hold is the new server's start-up (HAProxy parsing its
 * configuration: about 30 ms of a 38 ms hold here, docs/PROTECT.md), during which nothing races.
 * The race is the old listener closing: SYNs already hashed to it, or queued on it, are reset.
 *
 * Here CMD starts the new server beside the old one (no -sf: with SO_REUSEPORT both listen, and
 * both accept), and protect stops the old one itself, so it knows when the race begins:
 *   1. before CMD: the listeners of the protected ports, and the processes holding them (the old
 *      server, named by pid and start time so that a reused pid is never signalled);
 *   2. CMD runs, with no hold; protect waits until every listener from before has a new
 *      counterpart (port, family, address) and --ready answers (release-policy.ts:
 *      decideStopOld). If CMD fails, or the new server never listens, the old one is left
 *      serving and nothing is held: a failed reload changes nothing;
 *   3. hold; wait (briefly) for the old listeners' accept queues to empty, since the old server
 *      still accepts and, without net.ipv4.tcp_migrate_req, what is queued on a closing listener
 *      is reset, and for the port's connections mid-handshake; then send SIGNAL to the old server;
 *   4. release once the kernel says every old listener is freed (the same rule as protect's
 *      socket swap), or --settle-wait after the signal (the old server ignores it: released, and
 *      said), and always by max-hold (the watchdog).
 * The hold is then the old server's reaction to its signal, not the new one's start-up.
 */
import { ConfigError } from '../model/errors.js';
import { raiseToRealtime } from '../host/sched.js';
import type { Listener, ListenerWatcher } from '../sockdiag/inet_diag.js';
import { describeCause, type ReleaseCause } from './hold/cause.js';
import { parentPid, processId, signalProcess, type ProcessId } from './hold/process-id.js';
import type { HoldHandle, Released } from './hold/session.js';
import {
  commandState,
  LoopClock,
  msSince,
  ownEnd,
  releaseResult,
  runCommand,
  socketHandles,
  type SocketHandle,
  swapNoter,
  watchOldListeners,
  type CommandEnd,
  type HoldOutcome,
} from './observe.js';
import { probeTcp } from './ready.js';
import { migrateReq } from './sysctl.js';
import { decide, decideStopOld, DEFAULT_SETTLE_WAIT_MS, replacementsUp } from './release-policy.js';
import { ReloadSteer, PollingWatch } from './steer.js';
import type { ProtectOptions, ProtectResult, StopOldReport } from './report.js';

/** While nothing is held, a slower poll: only the reload's own length depends on it, no client does. */
const STARTING_POLL_MS = 5;

/**
 * How long the hold waits for what is on its way into the old listeners before signalling: their
 * accept queues, and the port's connections mid-handshake (request sockets, which no accept queue
 * shows yet and which a closing listener resets as well). No new SYN gets through while held, so
 * both only shrink, at the pace the old server accepts and the clients answer.
 *
 * With net.ipv4.tcp_migrate_req=1 the kernel moves what is left to the new listener when the old
 * one closes, so the wait is short: it goes on while the queues shrink, up to DRAIN_MAX_MS, and
 * DRAIN_STALL_MS without progress ends it (an old server that no longer accepts); handshakes are
 * not counted then (holdAroundStop: their count is the dearest part of the hold). Without
 * migration what is left is reset, so the wait has no stall rule and lasts until both counts are 0,
 * up to --settle-wait (drainBounds): the kernel lab (one slow CPU, where the old HAProxy accepts
 * tens of ms apart) lost 83 requests in 9 of 61 reloads with a fixed 50 ms, and 5 in 1 of 61 with
 * the short rule.
 */
export const DRAIN_STALL_MS = 50;
export const DRAIN_MAX_MS = 500;

export interface DrainBounds {
  /** Signal when the counts have not shrunk for this long (Infinity: never for that). */
  stallMs: number;
  /** Signal by this long after the hold's start, whatever is left. */
  maxMs: number;
}

/** The drain's bounds: short where migration moves what is left, else until empty (settleWaitMs at most). */
export function drainBounds(migrateReq: string | undefined, settleWaitMs: number): DrainBounds {
  return migrateReq === '1' ? { stallMs: DRAIN_STALL_MS, maxMs: DRAIN_MAX_MS } : { stallMs: Number.POSITIVE_INFINITY, maxMs: settleWaitMs };
}

/** What is still on its way into the old listeners: their accept queues, and the port's handshakes. */
export interface DrainLeft {
  queued: number;
  handshaking: number;
}

/**
 * Waits, under the hold, until nothing is on its way into the old listeners (see DRAIN_STALL_MS):
 * samples until both counts are 0, `bounds.stallMs` pass without their sum shrinking,
 * `bounds.maxMs` pass in all (`elapsed`: ms since the hold's start), or `stop` says the hold is
 * over. Returns the last sample.
 */
export async function drainOld(
  sample: () => Promise<DrainLeft>,
  pause: () => Promise<void>,
  elapsed: () => number,
  stop: () => boolean,
  bounds: DrainBounds = { stallMs: DRAIN_STALL_MS, maxMs: DRAIN_MAX_MS },
): Promise<DrainLeft> {
  let left = await sample();
  let sum = left.queued + left.handshaking;
  let progressAt = elapsed();
  while (sum > 0 && !stop()) {
    const t = elapsed();
    if (t >= bounds.maxMs || t - progressAt >= bounds.stallMs) break;
    await pause();
    left = await sample();
    const n = left.queued + left.handshaking;
    if (n < sum) progressAt = elapsed();
    sum = n;
  }
  return left;
}

/**
 * The old server: every process holding one of `before`'s listeners, protect excluded. Refuses
 * (before CMD runs, so nothing changes) when there is none to be found, when it is pid 1 (a
 * socket-activating init, or a container's server: signalling it is not stopping one server), or
 * when one holder is another's parent (a master and its workers).
 */
export function oldServer(before: readonly Listener[], handles: Map<number, SocketHandle[]>): ProcessId[] {
  const pids = [...new Set([...handles.values()].flat().map((h) => h.pid))].filter((p) => p !== process.pid).sort((a, b) => a - b);
  const ports = [...new Set(before.map((l) => l.port))].join(',');
  if (pids.length === 0) throw new ConfigError(`--stop-old: no process found holding the listener on port ${ports} (/proc/PID/fd); nothing was run`);
  if (pids.includes(1))
    throw new ConfigError(`--stop-old: the listener on port ${ports} is held by pid 1 (socket activation?), which is not a server to stop; nothing was run`);
  // A master and its workers all hold the listeners (nginx; HAProxy -W): the signal would go to the
  // master, which stops every worker, and such servers reload by handing the sockets over anyway.
  const master = pids.find((p) => pids.includes(parentPid(p) ?? -1));
  if (master !== undefined)
    throw new ConfigError(
      `--stop-old: the listener on port ${ports} is held by pid ${parentPid(master)} and its child ${master} (a master and its workers), which --stop-old would stop together; such servers reload by handing the socket over (protect's default rule); nothing was run`,
    );
  return pids.flatMap((p) => {
    const id = processId(p);
    return id ? [id] : [];
  });
}

/** Runs CMD beside the old server, then holds around the old server's stop (see the header). */
export async function holdAroundStop(
  startHold: () => Promise<HoldHandle>,
  opts: ProtectOptions & { stopOld: NodeJS.Signals },
  watcher: ListenerWatcher,
  ports: readonly number[],
  signal: AbortSignal,
  log: (l: string) => void,
): Promise<HoldOutcome> {
  const before = await watcher.list(ports);
  // Who holds the listeners (one scan of /proc, for both uses): the old server, and its fds for the steer.
  const handles = before.length > 0 ? socketHandles(new Set(before.map((l) => l.inode))) : new Map<number, SocketHandle[]>();
  const old = before.length > 0 ? oldServer(before, handles) : [];
  const report: StopOldReport = { signal: opts.stopOld, pids: old.map((p) => p.pid), outcome: 'stopped' };
  const guard = opts.startGuard !== false && before.length > 0;
  // Before CMD: from the new server's bind on, its listener would get its share of new connections.
  const steer = guard ? ReloadSteer.attach(before, report.pids, handles) : undefined;
  if (steer) report.steer = steer.report;
  try {
    return await stopAndHold(startHold, opts, watcher, ports, signal, log, { before, old, report, ...(steer ? { steer } : {}) });
  } finally {
    // After the release (or when nothing was held): through whichever sockets are in the groups now.
    if (steer?.active) steer.detach(await watcher.list(ports).catch(() => []));
  }
}

/** What the phases of one --stop-old reload share (stopAndHold and the steps it calls). */
interface StopOldRun {
  opts: ProtectOptions & { stopOld: NodeJS.Signals };
  watcher: ListenerWatcher;
  ports: readonly number[];
  signal: AbortSignal;
  log: (l: string) => void;
  before: Listener[];
  old: ProcessId[];
  report: StopOldReport;
  /** the start guard's, when it is on (steer.ts) */
  steer?: ReloadSteer;
  clock: LoopClock;
  settleWaitMs: number;
  timeoutAt: number;
  /** net.ipv4.tcp_migrate_req in the namespace */
  migrate: string | undefined;
  /** CMD's end, once it has ended */
  commandEnd: () => CommandEnd | undefined;
}

/** The new server is up: when protect first saw its listeners, and the listeners then. */
type NewServerUp = { newSeen: bigint; upNow: Listener[] };
/** Or the old server is left serving, nothing held: why, and whether by --timeout. */
type LeftServing = { left: string; outcome: StopOldReport['outcome']; timedOut: boolean };

async function stopAndHold(
  startHold: () => Promise<HoldHandle>,
  opts: ProtectOptions & { stopOld: NodeJS.Signals },
  watcher: ListenerWatcher,
  ports: readonly number[],
  signal: AbortSignal,
  log: (l: string) => void,
  o: { before: Listener[]; old: ProcessId[]; report: StopOldReport; steer?: ReloadSteer },
): Promise<HoldOutcome> {
  const { report } = o;
  const cmdStart = process.hrtime.bigint();
  const { child, ended } = runCommand(opts);
  const clock = new LoopClock();
  let commandEnd: CommandEnd | undefined;
  void ended.then((c) => {
    commandEnd = c;
    clock.poke();
  });
  signal.addEventListener('abort', () => clock.poke(), { once: true });
  // `say`: log why (as before this was split: the interrupted cases leave it to the result).
  const unheld = (left: LeftServing, say = left.outcome !== 'interrupted'): HoldOutcome => {
    report.outcome = left.outcome;
    report.left = left.left;
    if (say) log(left.left);
    return { child, ended, holdStart: cmdStart, result: { timedOut: left.timedOut, stopOld: report } };
  };
  if (o.before.length === 0)
    return unheld({ outcome: 'nothing-to-stop', left: 'no listener on the protected ports before CMD: nothing to stop, nothing held', timedOut: false });
  log(`old server: pid ${report.pids.join(',')}; starting the new one beside it`);
  // What is still on its way into the old listener when it closes (queued, mid-handshake) is moved to
  // the new one only by the kernel's migration: without it a slow host lost requests (docs/PROTECT.md).
  const migrate = migrateReq(opts.netns);
  if (migrate !== '1')
    report.warning = `net.ipv4.tcp_migrate_req is ${migrate ?? 'missing (kernel before 5.14)'}: connections still entering the old listener when it closes are reset, not moved (synhold setup turns it on unless --migrate-req off)`;
  const run: StopOldRun = {
    ...o,
    opts,
    watcher,
    ports,
    signal,
    log,
    clock,
    settleWaitMs: opts.settleWaitMs ?? DEFAULT_SETTLE_WAIT_MS,
    timeoutAt: opts.timeoutMs ? Date.now() + opts.timeoutMs : Infinity,
    migrate,
    commandEnd: () => commandEnd,
  };

  // 2. Until the new server is up (or the reload has failed): nothing held.
  const up = await waitForNewServer(run);
  if ('left' in up) return unheld(up);
  // 2b. The start guard's turn: new connections go to the new server, the old one empties its queue unheld.
  if (run.steer?.toNew(up.upNow)) await drainUnheld(run);

  // 3. Hold, let the old listeners' queues empty, signal the old server.
  let hold: HoldHandle;
  try {
    hold = await startHold();
  } catch (e) {
    if (!signal.aborted) throw e;
    // A signal while waiting for another hold's lock: nothing held, the old server left serving.
    return unheld({
      outcome: 'interrupted',
      left: `protect got ${String(signal.reason)} while waiting to hold: the old server (pid ${report.pids.join(',')}) was left serving, nothing held`,
      timedOut: false,
    });
  }
  report.unheldMs = Number(process.hrtime.bigint() - cmdStart) / 1e6;
  const result = await holdThroughStop(run, hold, up.newSeen);
  return { child, ended, holdStart: cmdStart, result };
}

/** Steps 3 and 4, from the hold's start to its release, at real-time priority unless told otherwise (as protect.ts's hold). */
async function holdThroughStop(run: StopOldRun, hold: HoldHandle, newSeen: bigint): Promise<Partial<ProtectResult>> {
  const holdStart = process.hrtime.bigint();
  const lease = run.opts.priority === 'normal' ? undefined : raiseToRealtime();
  if (lease?.reason) run.log(`holding at normal priority: ${lease.reason}`);
  let holdEnded: Released | undefined;
  void hold.done.then((r) => {
    holdEnded = r;
    run.clock.poke();
  });
  const timeline: NonNullable<ProtectResult['timeline']> = { releaseSentMs: 0, newListenerMs: -Number(holdStart - newSeen) / 1e6 };
  const oldListeners = watchOldListeners(run.watcher, run.before, run.clock, run.opts.destroyEvents !== false);
  // Raised from the hold's start to its release, the release included.
  try {
    const holdOver = () => holdEnded !== undefined;
    await signalUnderHold(run, holdStart, timeline, holdOver);
    // 4. Until every old listener is freed (the kernel's word, or two dumps), --settle-wait at most.
    const cause = await waitForOldGone(run, holdStart, timeline, () => oldListeners.allFreed(), holdOver);
    timeline.releaseSentMs = msSince(holdStart);
    const r = holdEnded ?? (await hold.release(cause!));
    run.log(`released after ${r.durationMs.toFixed(1)} ms: ${describeCause(r.cause)}`);
    return {
      timedOut: cause?.kind === 'timeout',
      ...releaseResult(r, hold.held),
      timeline,
      stopOld: run.report,
      ...(lease ? { priority: { realtime: lease.realtime, ...(lease.reason ? { reason: lease.reason } : {}) } } : {}),
    };
  } finally {
    oldListeners.close();
    lease?.restore();
  }
}

/** Step 2: polls (nothing held) until decideStopOld says the new server is up, or to leave the old one serving. */
async function waitForNewServer(run: StopOldRun): Promise<NewServerUp | LeftServing> {
  const { before, ports, report, opts, signal } = run;
  let readyOk = !opts.ready;
  const polling = run.steer ? new PollingWatch(before) : undefined;
  let upAt: bigint | undefined;
  for (;;) {
    if (signal.aborted || Date.now() >= run.timeoutAt)
      return {
        outcome: 'interrupted',
        left: `${signal.aborted ? `protect got ${String(signal.reason)}` : 'protect --timeout'} before the new server was up: the old server (pid ${report.pids.join(',')}) was left serving, nothing held`,
        timedOut: !signal.aborted,
      };
    run.clock.polling();
    const now = await run.watcher.list(ports);
    const command = commandState(run.commandEnd());
    if (!readyOk && opts.ready) readyOk = await probeTcp(opts.ready.host, opts.ready.port, 50);
    let serving: { now: boolean; upForMs: number } | undefined;
    if (polling && replacementsUp(before, now, ports).up) {
      upAt ??= process.hrtime.bigint();
      serving = { now: polling.polled(now), upForMs: msSince(upAt) };
    }
    const d = decideStopOld(
      { before, now, readyOk, ...(command ? { command } : {}), ...(serving ? { serving } : {}) },
      { ports, settleWaitMs: run.settleWaitMs },
    );
    if ('stop' in d) {
      if (upAt) report.pollWaitMs = msSince(upAt);
      run.log(`${d.stop}; holding, then ${opts.stopOld} to pid ${report.pids.join(',')}`);
      return { newSeen: upAt ?? process.hrtime.bigint(), upNow: now };
    }
    if ('leave' in d)
      return {
        outcome: d.commandFailed ? 'command-failed' : 'not-replaced',
        left: `${d.leave}: the old server (pid ${report.pids.join(',')}) was left serving, nothing held`,
        timedOut: false,
      };
    await run.clock.sleep(STARTING_POLL_MS);
  }
}

/** Connections queued on the listeners from before the reload. */
function queuedOnOld(run: StopOldRun): (ls: readonly Listener[]) => number {
  const oldCookies = new Set(run.before.map((l) => l.cookie));
  return (ls) => ls.filter((l) => oldCookies.has(l.cookie)).reduce((a, l) => a + l.backlog.queued, 0);
}

/** One drain of the old listeners at the loop's poll interval (drainOld), `elapsed` ms from `t0`. */
function drainFrom(run: StopOldRun, t0: bigint, sample: () => Promise<DrainLeft>, stop: () => boolean): Promise<DrainLeft> {
  return drainOld(
    sample,
    async () => {
      await run.clock.sleep(run.opts.pollMs ?? 1);
      run.clock.polling();
    },
    () => msSince(t0),
    stop,
    drainBounds(run.migrate, run.settleWaitMs),
  );
}

/**
 * Step 2b, with the start guard turned to the new server: the old server only empties its accept
 * queue, with nothing held. What is still mid-handshake into the old listener is waited for under
 * the hold (signalUnderHold: its count is the port's, which only shrinks while SYNs are held).
 */
async function drainUnheld(run: StopOldRun): Promise<void> {
  const queued = queuedOnOld(run);
  const t0 = process.hrtime.bigint();
  const left = await drainFrom(
    run,
    t0,
    async () => ({ queued: queued(await run.watcher.list(run.ports)), handshaking: 0 }),
    () => run.signal.aborted,
  );
  run.report.unheldDrainMs = msSince(t0);
  run.log(`new connections turned to the new server; the old one's queue drained unheld in ${run.report.unheldDrainMs.toFixed(1)} ms (${left.queued} left)`);
}

/** Step 3, under the hold: waits for what is on its way into the old listeners, then signals the old server (unless the hold is over). */
async function signalUnderHold(run: StopOldRun, holdStart: bigint, timeline: NonNullable<ProtectResult['timeline']>, holdEnded: () => boolean): Promise<void> {
  const { report, ports } = run;
  const queued = queuedOnOld(run);
  // Handshakes are counted only without migration: with it the kernel moves a request socket
  // whose listener closed to the new one (at its final ACK, or its SYN-ACK's retransmit), and the
  // count is a walk of the whole established hash (ms under load: most of this hold, measured).
  const families = [...new Set(run.before.map((l) => l.family))];
  const handshakes = run.migrate === '1' ? async () => 0 : () => run.watcher.handshaking(ports, families);
  const left = await drainFrom(
    run,
    holdStart,
    async () => ({ queued: queued(await run.watcher.list(ports)), handshaking: await handshakes() }),
    () => run.signal.aborted || holdEnded(),
  );
  report.drainMs = msSince(holdStart);
  report.queuedAtSignal = left.queued;
  report.handshakingAtSignal = left.handshaking;
  if (!run.signal.aborted && !holdEnded()) {
    for (const p of run.old) signalProcess(p, run.opts.stopOld);
    timeline.stopSentMs = msSince(holdStart);
  }
}

/**
 * Step 4, under the hold: why to release: every old listener freed (the kernel's word, or two
 * dumps), --settle-wait after the signal, a signal or --timeout; undefined when the hold ended by itself.
 */
async function waitForOldGone(
  run: StopOldRun,
  holdStart: bigint,
  timeline: NonNullable<ProtectResult['timeline']>,
  oldGoneConfirmed: () => boolean,
  holdEnded: () => boolean,
): Promise<ReleaseCause | undefined> {
  const { before, ports, report, settleWaitMs } = run;
  let settledPolls = 0;
  // The new listener was noted before the hold; this notes the moment the old ones are gone.
  const noteSwap = swapNoter(timeline, before);
  while (!holdEnded()) {
    const own = ownEnd(run.signal, run.timeoutAt);
    if (own) return own;
    run.clock.polling();
    const now = await run.watcher.list(ports);
    noteSwap(now, msSince(holdStart));
    const d = decide({ before, now, settledPolls, readyOk: true, oldGoneConfirmed: oldGoneConfirmed() }, { releaseOn: 'swap', settleWaitMs, ports });
    const sinceSignal = msSince(holdStart) - (timeline.stopSentMs ?? 0);
    if ('release' in d) return { kind: 'reload-done', detail: `${describeCause(d.release)} after ${run.opts.stopOld} to pid ${report.pids.join(',')}` };
    if (sinceSignal >= settleWaitMs)
      return {
        kind: 'command-exited',
        detail: `the old server (pid ${report.pids.join(',')}) still listens ${Math.round(sinceSignal)} ms after ${run.opts.stopOld} (--settle-wait): not closing`,
      };
    settledPolls = d.settled ? settledPolls + 1 : 0;
    // As protect's loop: a first settled dump without the kernel's word is dumped again at once.
    if (settledPolls !== 1) await run.clock.sleep(run.opts.pollMs ?? 1);
  }
  return undefined;
}
