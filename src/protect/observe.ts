/**
 * What protect watches while it decides: CMD (its end), the listening sockets (the kernel's word
 * that an old one was freed, pokes to the loop between polls) and the processes holding them
 * (/proc/PID/fd). Shared by the hold around a whole reload (protect.ts) and the hold around the
 * old server's stop alone (stop-old.ts).
 */
import { readdirSync, readlinkSync } from 'node:fs';
import { Child, StartError } from '../host/child.js';
import { netnsPath } from '../netlink/socket.js';
import type { ListenerWatcher, Listener } from '../sockdiag/inet_diag.js';
import { describeCause, type ReleaseCause } from './hold/cause.js';
import type { Held, Released } from './hold/session.js';
import type { ProtectResult } from './report.js';

export interface CommandEnd {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** It could not start: ENOENT (not found, 127) or another reason (126). */
  error?: StartError;
  at: bigint;
}

/** CMD's end as the release policies read it: failed or not, and how long ago; undefined while it runs. */
export function commandState(c: CommandEnd | undefined): { failed: boolean; msSinceExit: number } | undefined {
  return c ? { failed: !!c.error || c.code !== 0, msSinceExit: Number(process.hrtime.bigint() - c.at) / 1e6 } : undefined;
}

/** protect's own ends, checked before each poll: a signal (or the library's abort), then --timeout. */
export function ownEnd(signal: AbortSignal, timeoutAt: number): ReleaseCause | undefined {
  if (signal.aborted) return { kind: 'signal', signal: String(signal.reason) };
  if (Date.now() >= timeoutAt) return { kind: 'timeout' };
  return undefined;
}

/** What protect's result says of the release; `held`: the hold it ends (its start, for holdStartedAt). */
export function releaseResult(r: Released, held: Pick<Held, 'since'>): Partial<ProtectResult> {
  return {
    holdStartedAt: new Date(held.since).toISOString(),
    holdMs: r.durationMs,
    released: r.released,
    drops: r.drops,
    releaseReason: describeCause(r.cause),
    releaseCause: r.cause.kind,
    releasedBy: r.by,
    ...(r.othersCut ? { othersCut: r.othersCut } : {}),
    ...(r.othersWaitMs ? { othersWaitMs: r.othersWaitMs } : {}),
    ...(r.steeringLeft ? { steeringLeft: r.steeringLeft } : {}),
  };
}

/** CMD as a child, with its end as a promise. No shell: argv as given. */
export function runCommand(opts: { command: string[]; netns?: string }): { child: Child | undefined; ended: Promise<CommandEnd> } {
  // With --netns, CMD runs inside that namespace too (a reload must bind there): the
  // child enters it itself before exec (host/child.ts), so its exit status and death
  // by signal are CMD's own.
  try {
    const child = Child.start(opts.command, opts.netns ? { netnsPath: netnsPath(opts.netns) } : {});
    return { child, ended: child.ended };
  } catch (e) {
    if (!(e instanceof StartError)) throw e;
    return { child: undefined, ended: Promise.resolve({ code: null, signal: null, error: e, at: process.hrtime.bigint() }) };
  }
}

/**
 * What wakes protect's loop between polls: CMD's exit, the hold's own end, a signal, an old listener
 * freed. A poke during a poll (not while sleeping) makes the next sleep return at once, so no event
 * waits for the poll after.
 */
export class LoopClock {
  private wake: () => void = () => undefined;
  private poked = false;

  poke(): void {
    this.poked = true;
    this.wake();
  }

  /** Called as a poll begins: what comes from now on is news to it. */
  polling(): void {
    this.poked = false;
  }

  async sleep(ms: number): Promise<void> {
    if (this.poked) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
    this.wake = () => undefined;
  }
}

/**
 * The old listeners' end, from the kernel: sock_diag's destroy notifications pokes the loop when one
 * is freed, rather than leaving it for the next poll, and once every one is freed the kernel's word
 * stands for the policy's second poll (release-policy.ts). The poll stays, for what has no
 * notification (a new listener) and for a lost one.
 */
export function watchOldListeners(
  watcher: ListenerWatcher,
  before: readonly Listener[],
  clock: LoopClock,
  enabled: boolean,
): { allFreed(): boolean; close(): void } {
  const old = new Set(before.map((l) => l.cookie));
  const freed = new Set<string>();
  const unwatch = enabled
    ? watcher.watchDestroyed(old, (s) => {
        freed.add(s.cookie);
        clock.poke();
      })
    : undefined;
  return { allFreed: () => old.size > 0 && freed.size === old.size, close: () => unwatch?.() };
}

export const msSince = (t: bigint) => Number(process.hrtime.bigint() - t) / 1e6;
export const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

/**
 * Every pid holding one of `inodes`, by inode: /proc/PID/fd links read `socket:[INODE]`
 * (what `ss -p` reads). `running` gets every pid seen.
 */
export function socketHolders(inodes: ReadonlySet<number>, running?: Set<number>): Map<number, number[]> {
  const out = new Map<number, number[]>();
  for (const [inode, handles] of socketHandles(inodes, running)) out.set(inode, [...new Set(handles.map((h) => h.pid))]);
  return out;
}

/** One process's fd of a socket. */
export interface SocketHandle {
  pid: number;
  fd: number;
}

/** Every fd naming one of `inodes`, in every process, by inode (socketHolders with the fd numbers). */
export function socketHandles(inodes: ReadonlySet<number>, running?: Set<number>): Map<number, SocketHandle[]> {
  const out = new Map<number, SocketHandle[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    running?.add(Number(name));
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${name}/fd`);
    } catch {
      continue; // gone, or not ours to read
    }
    for (const fd of fds) {
      let link: string;
      try {
        link = readlinkSync(`/proc/${name}/fd/${fd}`);
      } catch {
        continue;
      }
      if (!link.startsWith('socket:[')) continue;
      const inode = Number(link.slice(8, -1));
      if (!inodes.has(inode)) continue;
      const handles = out.get(inode) ?? [];
      handles.push({ pid: Number(name), fd: Number(fd) });
      out.set(inode, handles);
    }
  }
  return out;
}

/**
 * Notes in `t`, once each, the first new listener of a protected port and the
 * moment the last old one is gone. Built once per hold: it runs on every poll
 * (every few ms), so the old listeners' set is made once and nothing is
 * allocated once both moments are known.
 */
export function swapNoter(t: { newListenerMs?: number; oldGoneMs?: number }, before: readonly Listener[]): (now: readonly Listener[], ms: number) => void {
  const old = new Set(before.map((l) => l.cookie));
  return (now, ms) => {
    if (t.newListenerMs === undefined && now.some((l) => !old.has(l.cookie))) t.newListenerMs = ms;
    // Old gone: no listener of now is one of before's (cookies are unique, so counting is enough).
    if (t.oldGoneMs === undefined && before.length > 0 && !now.some((l) => old.has(l.cookie))) t.oldGoneMs = ms;
  };
}

/** What running CMD under a hold leaves for the caller: its part of the result, CMD itself and its end. */
export interface HoldOutcome {
  result: Partial<ProtectResult>;
  child: Child | undefined;
  ended: Promise<CommandEnd>;
  holdStart: bigint;
}
