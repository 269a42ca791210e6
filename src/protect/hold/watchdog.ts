/**
 * The owner's side of the watchdog (native/watchdog.c): start it with a hold's
 * fallback before the hold begins, tell it when the owner releases, and learn
 * from its exit whether it released on its own (max-hold, a signal from
 * `synhold release`, the daemon's client gone).
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../host/package-root.js';
import type { Fallback } from '../../backends/backend.js';
import { SynholdError } from '../../model/errors.js';
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

/** The watchdog program, built by node-gyp next to the addon. */
export function watchdogPath(): string {
  const found = join(packageRoot(), 'build', 'Release', 'synhold-watchdog');
  if (!existsSync(found)) throw new SynholdError('ERR_NATIVE_MISSING', `synhold's watchdog program is not built (no ${found}); run \`npm ci\``);
  return found;
}

export class Watchdog {
  readonly id: ProcessId;
  /** Resolves when the watchdog has exited, with how. */
  readonly ended: Promise<WatchdogEnd>;
  private endedWith?: WatchdogEnd;

  private constructor(
    private readonly child: ChildProcess,
    id: ProcessId,
    ended: Promise<WatchdogEnd>,
  ) {
    this.id = id;
    this.ended = ended.then((e) => (this.endedWith = e));
  }

  /** Starts the watchdog and resolves once it runs (before the hold may begin). */
  static async start(o: WatchdogOptions): Promise<Watchdog> {
    const fds = [o.lockFd, ...o.fallback.sockets];
    // fd 0: the owner pipe (or nothing); 1: nothing; 2: our stderr for its one line (none for a
    // manual hold, which outlives the command that started it); 3: the lock; 4...: the sockets.
    const stdio: StdioOptions = [o.owner === 'process' ? 'pipe' : 'ignore', 'ignore', o.owner === 'process' ? 'inherit' : 'ignore', ...fds];
    const args = ['--deadline-ms', String(Math.max(0, Math.round(o.deadlineMs))), '--lock-fd', '3', '--record', o.recordPath, '--journal', o.journalPath];
    args.push(...(o.owner === 'process' ? ['--owner-fd', '0'] : ['--no-owner']));
    if (o.watchPid) args.push('--watch-pid', String(o.watchPid));
    for (const m of o.fallback.messages) args.push('--send', `${4 + m.socket}:${m.bytes.toString('hex')}`);
    for (const c of o.fallback.commands) args.push('--run', c.join('\x1f'));
    // Its own session: a Ctrl-C aimed at the reload command's group, or a kill of
    // protect's group, must not take the dead-man's switch down with the owner.
    const child = spawn(watchdogPath(), args, { stdio, detached: true });
    const ended = new Promise<WatchdogEnd>((resolve) => {
      child.once('exit', (code, signal) => {
        if (code === 0) resolve({ kind: 'stood-down' });
        else if (code !== null && BY_CODE[code]) resolve(BY_CODE[code]);
        else if (code === 20) resolve({ kind: 'release-failed' });
        else resolve({ kind: 'died', signal, code });
      });
    });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', (e) => reject(new SynholdError('ERR_WATCHDOG', `cannot start the watchdog: ${e.message}`)));
    });
    // A write racing the watchdog's exit fails with EPIPE: its exit says what happened.
    child.stdin?.on('error', () => undefined);
    const id = processId(child.pid!) ?? { pid: child.pid!, start: '?' };
    if (o.owner === 'none') child.unref();
    return new Watchdog(child, id, ended);
  }

  get pid(): number {
    return this.id.pid;
  }

  /** How it ended, once it has. */
  get end(): WatchdogEnd | undefined {
    return this.endedWith;
  }

  /** The owner is releasing: stand down from the deadline and signals (but finish if the owner dies now). */
  beginRelease(): void {
    this.child.stdin?.write('B');
  }

  /**
   * The owner released and recorded it: exit without sending anything. A
   * watchdog that has not gone 200 ms later is stopped (SIGSTOP) or hung; its
   * job is done, and it would keep the hold lock (and this process) alive: kill it.
   */
  stand(): void {
    this.child.stdin?.end('X');
    if (this.endedWith) return;
    const t = setTimeout(() => this.child.kill('SIGKILL'), 200);
    void this.ended.then(() => clearTimeout(t));
  }

  /** Finish the release for the owner (the owner's own attempt failed): EOF after 'B'. */
  takeOver(): void {
    this.child.stdin?.end();
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
    this.child.stdin?.destroy();
    this.child.unref();
  }
}
