/**
 * The owner's side of the watchdog (native/watchdog.c): start it with a hold's
 * fallback before the hold begins, tell it when the owner releases, and learn
 * from its exit whether it released on its own (max-hold, a signal from
 * `synhold release`, the daemon's client gone).
 */
import { closeSync, writeSync } from 'node:fs';
import { Child, devNull, pipe, StartError } from '../../host/child.js';
import { nativeBinary } from '../../native/binary.js';
import type { Fallback } from '../../backends/backend.js';
import { WatchdogError } from '../../model/errors.js';
import type { ReleaseKind } from './cause.js';
import { processId, type ProcessId } from './process-id.js';

export interface WatchdogOptions {
  fallback: Fallback;
  /** Release this long after start, whatever the owner does. */
  deadlineMs: number;
  /** 'process': this process owns the hold (EOF on the pipe = owner gone). 'none': a manual hold that outlives this process. */
  owner: 'process' | 'none';
  /** Also release when this process exits (the daemon's client). */
  watchPid?: number;
  /** The hold lock's fd: the watchdog keeps a duplicate, so the lock outlives the owner until the watchdog is done. */
  lockFd: number;
  /** The hold record, removed by the watchdog after a release of its own. */
  recordPath: string;
  /** Where the watchdog appends a line for each release of its own (folded into the stats). */
  journalPath: string;
}

/** How the watchdog ended. */
export type WatchdogEnd =
  | { kind: 'stood-down' }
  | { kind: 'released'; cause: Extract<ReleaseKind, 'owner-gone' | 'max-hold' | 'manual'>; detail: 'signal' | 'owner-gone' | 'max-hold' | 'watched-exited' }
  | { kind: 'release-failed' }
  | { kind: 'died'; signal: NodeJS.Signals | null; code: number | null };

const BY_CODE: Record<number, Extract<WatchdogEnd, { kind: 'released' }>> = {
  10: { kind: 'released', cause: 'owner-gone', detail: 'owner-gone' },
  11: { kind: 'released', cause: 'max-hold', detail: 'max-hold' },
  12: { kind: 'released', cause: 'manual', detail: 'signal' },
  13: { kind: 'released', cause: 'owner-gone', detail: 'watched-exited' },
};

/** The watchdog program: built by node-gyp next to the addon, or the package's prebuilt one (native/binary.ts). */
export function watchdogPath(): string {
  return nativeBinary('synhold-watchdog');
}

export class Watchdog {
  readonly id: ProcessId;
  /** Resolves when the watchdog has exited, with how. */
  readonly ended: Promise<WatchdogEnd>;
  private endedWith?: WatchdogEnd;

  private constructor(
    private readonly child: Child,
    /** Our end of its owner pipe (-1: none, or closed). */
    private ownerFd: number,
    id: ProcessId,
    ended: Promise<WatchdogEnd>,
  ) {
    this.id = id;
    this.ended = ended.then((e) => {
      this.endedWith = e;
      this.closeOwner();
      return e;
    });
  }

  /** Starts the watchdog; it runs when this returns (before the hold may begin). */
  static start(o: WatchdogOptions): Watchdog {
    const args = ['--deadline-ms', String(Math.max(0, Math.round(o.deadlineMs))), '--lock-fd', '3', '--record', o.recordPath, '--journal', o.journalPath];
    args.push(...(o.owner === 'process' ? ['--owner-fd', '0'] : ['--no-owner']));
    if (o.watchPid) args.push('--watch-pid', String(o.watchPid));
    for (const m of o.fallback.messages) args.push('--send', `${4 + m.socket}:${m.bytes.toString('hex')}`);
    for (const c of o.fallback.commands) args.push('--run', c.join('\x1f'));
    const [ownerRead, ownerWrite] = o.owner === 'process' ? pipe() : [devNull(), -1];
    // fd 0: the owner pipe (or nothing); 1: nothing; 2: our stderr for its one line (none for a
    // manual hold, which outlives the command that started it); 3: the lock; 4...: the sockets.
    const fds = [ownerRead, devNull(), o.owner === 'process' ? 2 : devNull(), o.lockFd, ...o.fallback.sockets];
    let child: Child;
    try {
      // Its own session: a Ctrl-C aimed at the reload command's group, or a kill of
      // protect's group, must not take the dead-man's switch down with the owner.
      // Its signals blocked from birth: a `synhold release` (SIGTERM) that comes before it has set up
      // its signalfd waits for it, instead of killing it unreleased (the hold record names it as
      // soon as the hold begins, which can be before the program has run its first line).
      child = Child.start([watchdogPath(), ...args], { fds, newSession: true, blockSignals: ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGUSR1'] });
    } catch (e) {
      if (ownerWrite >= 0) closeSync(ownerWrite);
      throw e instanceof StartError ? new WatchdogError(`cannot start the watchdog: ${e.message}`) : e;
    } finally {
      if (ownerWrite >= 0) closeSync(ownerRead);
    }
    const ended = child.ended.then(({ code, signal }): WatchdogEnd => {
      if (code === 0) return { kind: 'stood-down' };
      if (code !== null && BY_CODE[code]) return BY_CODE[code];
      if (code === 20) return { kind: 'release-failed' };
      return { kind: 'died', signal, code };
    });
    const id = processId(child.pid) ?? { pid: child.pid, start: '?' };
    if (o.owner === 'none') child.unref();
    const wd = new Watchdog(child, ownerWrite, id, ended);
    o.fallback.relayAcks?.((seq, error) => wd.relayAck(seq, error));
    return wd;
  }

  get pid(): number {
    return this.id.pid;
  }

  /** How it ended, once it has. */
  get end(): WatchdogEnd | undefined {
    return this.endedWith;
  }

  /** One byte to the owner pipe. A write racing the watchdog's exit fails (EPIPE): its exit says what happened. */
  private tell(byte: 'B' | 'X' | 'T'): void {
    if (this.ownerFd < 0) return;
    try {
      writeSync(this.ownerFd, byte);
    } catch {
      // it is gone; ended reports how
    }
  }

  /**
   * An ack of one of the watchdog's requests that our socket read first: 'A',
   * seq and error (big-endian u32, i32): 9 bytes, one atomic pipe write.
   */
  relayAck(seq: number, error: number): void {
    if (this.ownerFd < 0) return;
    const rec = Buffer.alloc(9);
    rec.write('A', 0, 'latin1');
    rec.writeUInt32BE(seq >>> 0, 1);
    rec.writeInt32BE(error | 0, 5);
    try {
      writeSync(this.ownerFd, rec);
    } catch {
      // it is gone; ended reports how
    }
  }

  /** EOF on the owner pipe. */
  private closeOwner(): void {
    if (this.ownerFd < 0) return;
    closeSync(this.ownerFd);
    this.ownerFd = -1;
  }

  /** The owner is releasing: stand down from the deadline and signals (but finish if the owner dies now). */
  beginRelease(): void {
    this.tell('B');
  }

  /**
   * The owner released and recorded it: exit without sending anything. A
   * watchdog that has not gone 200 ms later is stopped (SIGSTOP) or hung; its
   * job is done, and it would keep the hold lock (and this process) alive: kill it.
   */
  stand(): void {
    this.tell('X');
    this.closeOwner();
    if (this.endedWith) return;
    // A manual hold's watchdog was unref'd: waiting for its end must keep this process alive.
    this.child.ref();
    const t = setTimeout(() => this.child.kill('SIGKILL'), 200);
    void this.ended.then(() => clearTimeout(t));
  }

  /**
   * Finish the release for the owner (the owner's own attempt failed). 'T', not
   * EOF: the pipe stays open to relay the acks our sockets read meanwhile.
   */
  takeOver(): void {
    if (this.ownerFd >= 0) return this.tell('T');
    // A manual hold's watchdog has no owner pipe to hear 'T' on: a signal is its only word (as
    // `synhold release` sends), and this process, which unref'd it, now waits for its exit.
    this.child.ref();
    this.releaseNow();
  }

  /** Releases now, as `synhold release` does. */
  releaseNow(): void {
    this.child.kill('SIGTERM');
  }

  /** The owner's release failed and so did the watchdog's: take it down with the sockets it keeps. */
  kill(): void {
    this.child.kill('SIGKILL');
  }

  /** Forget it: a manual hold leaves the watchdog running after this process exits. */
  detach(): void {
    this.closeOwner();
    this.child.unref();
  }
}
