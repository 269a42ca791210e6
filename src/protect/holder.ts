/**
 * The holder: a small process that owns one hold from start to release.
 *
 * Why a separate process: the plug outlives whoever set it, so a crash of the
 * process that plugged would leave every new connection hanging. The holder is
 * forked by `synhold protect` (or `synhold plug`) with an IPC channel; the
 * moment its owner dies, even by kill -9, the kernel closes the channel, the
 * holder sees 'disconnect' and releases (a millisecond, not a timeout). It also
 * releases at the max-hold deadline whatever else happens, and on SIGTERM or
 * SIGINT (that is how `synhold release` ends a manual hold). Conversely, the
 * owner watches the holder and releases itself if the holder dies first.
 *
 * The holder keeps the hold lock (flock) for the whole hold, so holds are
 * serialised: a second protect waits for the first to release, and one
 * caller's release can never cut another's reload short.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { SynholdError } from '../model/errors.js';
import { HoldSession, type Held, type Released } from './hold-session.js';

export interface HolderArgs {
  netns?: string;
  maxHoldMs: number;
  lockWaitMs: number;
  /** 'ipc': release when the owner goes away. 'none': a manual hold, released by SIGTERM or max-hold. */
  owner: 'ipc' | 'none';
}

export type HolderMessage = Held | Released | { type: 'error'; code: string; message: string };

export type ReleaseReason = string;

/** Child side: hold, wait for a reason to release, release, exit. */
export async function runHolder(args: HolderArgs): Promise<number> {
  const send = (m: HolderMessage) => {
    if (process.connected) process.send?.(m);
  };
  let release!: (reason: ReleaseReason) => void;
  const released = new Promise<ReleaseReason>((r) => (release = r));
  // Arm every release path before holding, so none can be missed.
  process.on('SIGTERM', () => release('SIGTERM'));
  process.on('SIGINT', () => release('SIGINT'));
  process.on('SIGHUP', () => release('SIGHUP'));
  if (args.owner === 'ipc') {
    process.on('disconnect', () => release('owner gone'));
    process.on('message', (m: { type?: string; reason?: string }) => {
      if (m?.type === 'release') release(m.reason ?? 'released');
    });
  }
  let session: HoldSession;
  try {
    session = await HoldSession.start({
      netns: args.netns,
      maxHoldMs: args.maxHoldMs,
      lockWaitMs: args.lockWaitMs,
      holderPid: process.pid,
      ...(args.owner === 'ipc' && process.ppid ? { ownerPid: process.ppid } : {}),
      via: 'holder',
    });
  } catch (e) {
    send({ type: 'error', code: (e as SynholdError).code ?? 'ERR_HOLD', message: (e as Error).message });
    return 1;
  }
  send(session.held);
  if (args.owner === 'none' && process.connected) process.disconnect();
  // Max-hold is the session's own timer; whichever comes first wins.
  const reason = await Promise.race([released, session.done.then((r) => r.reason)]);
  try {
    send(await session.release(reason));
  } catch (e) {
    send({ type: 'error', code: 'ERR_RELEASE', message: (e as Error).message });
    return 1;
  } finally {
    if (process.connected) process.disconnect();
  }
  return 0;
}

/** What protect holds through: a forked holder process, or the daemon. */
export interface HoldHandle {
  readonly kind: 'holder' | 'daemon';
  /** Resolves once the hold is on. */
  held: Promise<Held>;
  /** Asks for release and resolves with the holder's account of it. */
  release(reason: string): Promise<Released>;
  /** Resolves when the holder is gone: its process exited, or the daemon connection closed. */
  gone: Promise<void>;
  /** The holder's release report, once it sent one (also for releases it did on its own: max-hold). */
  readonly releasedInfo: Released | undefined;
}

/** Parent side of a forked holder. */
export interface HolderHandle extends HoldHandle {
  readonly child: ChildProcess;
  /** Resolves when the holder process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const HOLDER_MAIN = fileURLToPath(new URL('./holder-main.js', import.meta.url));

export function startHolder(args: HolderArgs): HolderHandle {
  const child = fork(HOLDER_MAIN, [JSON.stringify(args)], {
    // A manual hold outlives `synhold plug`: it must not keep that command's
    // stdout open (a pipe reading it would wait for the release).
    stdio: args.owner === 'ipc' ? ['ignore', 'inherit', 'inherit', 'ipc'] : ['ignore', 'ignore', 'ignore', 'ipc'],
    // Its own process group and session: a Ctrl-C aimed at the reload command's
    // group, or a kill of protect's group, must not take the holder down first.
    detached: true,
    serialization: 'json',
  });
  const waiters: ((m: HolderMessage) => void)[] = [];
  let releasedInfo: Extract<HolderMessage, { type: 'released' }> | undefined;
  child.on('message', (m: HolderMessage) => {
    if (m.type === 'released') releasedInfo = m;
    waiters.forEach((w) => w(m));
  });
  // 'close', not 'exit': 'exit' can come before the last IPC message (the
  // holder's 'released') is delivered; 'close' comes after the channel drained.
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal })),
  );
  // A send racing the holder's own exit fails with EPIPE; the outcome is known
  // from its messages or its exit, so the error itself is not news.
  child.on('error', () => undefined);
  const next = <T extends HolderMessage['type']>(type: T): Promise<Extract<HolderMessage, { type: T }>> =>
    new Promise((resolve, reject) => {
      const onMsg = (m: HolderMessage) => {
        if (m.type === type) resolve(m as Extract<HolderMessage, { type: T }>);
        else if (m.type === 'error') reject(new SynholdError(m.code, m.message));
      };
      waiters.push(onMsg);
      void exited.then(({ code, signal }) =>
        reject(
          new SynholdError('ERR_HOLDER_DIED', `the holder process exited (${signal ?? `code ${code}`}) before it ${type === 'held' ? 'held' : 'released'}`),
        ),
      );
    });
  const held = next('held');
  held.catch(() => undefined);
  return {
    kind: 'holder',
    child,
    gone: exited.then(() => undefined),
    held,
    release(reason) {
      if (releasedInfo) return Promise.resolve(releasedInfo);
      const done = next('released');
      if (child.connected) child.send({ type: 'release', reason }, () => undefined);
      else if (child.exitCode === null) child.kill('SIGTERM');
      return done;
    },
    exited,
    get releasedInfo() {
      return releasedInfo;
    },
  };
}
