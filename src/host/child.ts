/**
 * A child process started the cheap way (native/spawn.c): no fork of this
 * process's memory, no nsenter to enter a network namespace. protect starts
 * two children per reload (the hold's watchdog and the reload command), and
 * with child_process.spawn those were a tenth of Node's own start-up on the
 * host and more in the kernel lab.
 *
 * What it does not do that child_process does: pipes and streams (a caller
 * that wants one makes it with pipe() and passes an end), an 'error' event
 * (a child that cannot start throws here, at once).
 */
import { constants as osConstants } from 'node:os';
import { native, isNativeError } from '../native/addon.js';
import { openSync } from 'node:fs';

export interface ChildEnd {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** process.hrtime.bigint() when the exit was seen. */
  at: bigint;
}

export interface StartOptions {
  /** Child fd i is our fd fds[i] (default [0, 1, 2]: our stdio). Use devNull() for "nothing". */
  fds?: number[];
  /** Run it inside the network namespace of this nsfs file (e.g. /run/netns/NAME), as nsenter would, without the extra program. */
  netnsPath?: string;
  /** Its own session (setsid): a signal to our process group does not reach it. */
  newSession?: boolean;
  /**
   * Signals that stay blocked across exec: one sent before the program has set up its own
   * handling then waits for it (pending) instead of killing it with the default action.
   */
  blockSignals?: NodeJS.Signals[];
}

/** A child that could not start: `code` as child_process names it (ENOENT: not found; EACCES, ENOEXEC: not executable). */
export class StartError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly step: string,
  ) {
    super(message);
  }
}

const ERRNO_NAMES = new Map(Object.entries(osConstants.errno).map(([name, n]) => [n, name]));
const SIGNAL_NAMES = new Map(Object.entries(osConstants.signals).map(([name, n]) => [n, name as NodeJS.Signals]));

export class Child {
  readonly pid: number;
  /** Resolves once it has exited (and been reaped). */
  readonly ended: Promise<ChildEnd>;

  private constructor(
    pid: number,
    ended: Promise<ChildEnd>,
    /** Set the moment it is reaped (synchronously, in the exit callback): from then on its pid may be another's. */
    private readonly state: { exited: boolean },
  ) {
    this.pid = pid;
    this.ended = ended;
  }

  /** Starts argv[0] (looked up in PATH unless it has a '/'). Throws StartError if it cannot run. */
  static start(argv: readonly string[], o: StartOptions = {}): Child {
    let resolve!: (e: ChildEnd) => void;
    const ended = new Promise<ChildEnd>((r) => (resolve = r));
    const state = { exited: false };
    const onExit = (code: number | null, sig: number | null) => {
      state.exited = true;
      resolve({ code: code === -1 ? null : code, signal: sig === null ? null : (SIGNAL_NAMES.get(sig) ?? null), at: process.hrtime.bigint() });
    };
    let pid: number;
    try {
      const blocked = o.blockSignals?.map((s) => osConstants.signals[s]);
      pid = native().spawn(argv[0]!, [...argv], o.fds ?? [0, 1, 2], o.netnsPath ?? null, o.newSession ?? false, onExit, blocked);
    } catch (e) {
      if (!isNativeError(e)) throw e;
      const code = ERRNO_NAMES.get(e.errno) ?? `errno ${e.errno}`;
      throw new StartError(`${e.syscall === 'exec' ? `cannot run ${argv[0]}` : e.syscall}: ${e.message.replace(/^[^:]*: /, '')}`, code, e.syscall);
    }
    return new Child(pid, ended, state);
  }

  /** Sends a signal unless it has already been reaped (then its pid may be someone else's). Returns whether it was sent. */
  kill(signal: NodeJS.Signals = 'SIGTERM'): boolean {
    if (this.state.exited) return false;
    try {
      process.kill(this.pid, signal);
      return true;
    } catch {
      return false;
    }
  }

  /** Let this process exit while the child runs on. */
  unref(): void {
    if (!this.state.exited) native().setChildRef(this.pid, false);
  }

  /** Undoes unref(): this process waits for the child again. */
  ref(): void {
    if (!this.state.exited) native().setChildRef(this.pid, true);
  }
}

/** A close-on-exec pipe, [read end, write end], for a child's stdin. */
export function pipe(): [number, number] {
  return native().pipe();
}

let nullFd: number | undefined;

/** An fd of /dev/null (opened once, close-on-exec like every fd Node opens), for a child's "nothing". */
export function devNull(): number {
  nullFd ??= openSync('/dev/null', 'r+');
  return nullFd;
}
