/**
 * --stop-old's start guard, against the new server's start-up, the tail its hold did not cover
 * (docs/PROTECT.md): from its bind on, the new server's listener is in the port's SO_REUSEPORT
 * group, and the kernel hashes new connections across the old listener and the new one; those
 * given to the new one wait in its queue until its start-up ends and its event loop runs.
 *
 * - The steer (ReloadSteer): before CMD, a program on each protected group sends every new
 *   connection to the group's first socket, the oldest: the old server, which still accepts, takes
 *   them all while the new one starts. Once the new server polls, the program sends them to the new
 *   socket instead, so the old one only empties its accept queue, with nothing held; after the
 *   release it is detached. Only a group that is one socket of one server before CMD is steered
 *   (several sockets are a server balancing on purpose, e.g. nginx's `reuseport`).
 * - Polled (PollingWatch): protect stops the old server once the new one polls its new listeners,
 *   each registered in an epoll set of a process holding it (/proc/PID/fdinfo of its eventpoll fds
 *   names each target's inode). Until then what the new listener gets would wait for the rest of
 *   the start-up.
 *
 * Both are best effort: without pidfd_getfd (Linux 5.6) or the right to use it, nothing is steered
 * and the report says why; a server that does not use epoll is not seen polling, and the stop waits
 * --settle-wait (release-policy.ts: decideStopOld).
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { native } from '../native/addon.js';
import type { Listener } from '../sockdiag/inet_diag.js';
import { socketHandles, type SocketHandle } from './observe.js';
import type { SteerReport } from './report.js';

const groupKey = (l: Listener) => `${l.family} ${l.address} port ${l.port}${l.ifindex ? ` dev ${l.ifindex}` : ''}`;

/** Listeners by SO_REUSEPORT group (family, address, port, device). */
function byGroup(ls: readonly Listener[]): Map<string, Listener[]> {
  const out = new Map<string, Listener[]>();
  for (const l of ls) out.set(groupKey(l), [...(out.get(groupKey(l)) ?? []), l]);
  return out;
}

/** reuseportSteer through the first of `handles` that works: undefined, or why none did. */
function steerThrough(handles: readonly SocketHandle[], index: number): string | undefined {
  let why = 'no socket of it left';
  for (const h of handles) {
    try {
      native().reuseportSteer(h.pid, h.fd, index);
      return undefined;
    } catch (e) {
      why = (e as Error).message;
    }
  }
  return why;
}

/**
 * The steer on the old server's groups, in the reload's three steps: to the old socket before CMD
 * (attach), to the new one once the new server polls it (toNew: the old one then only drains what
 * it has), and off after the release (detach). A program acts on the whole group, so any socket of
 * it will do: the old server's fd while it runs, a socket of the group as it is after the release.
 */
export class ReloadSteer {
  readonly report: SteerReport = { steered: [], toNew: [], notes: [] };
  /** Each steered group, with the old server's fd it was steered through. */
  private readonly via = new Map<string, SocketHandle>();

  private constructor(private readonly oldCookies: ReadonlySet<string>) {}

  /** Steers each group of `before` that is one socket, held by the old server (`oldPids`), to that socket. */
  static attach(
    before: readonly Listener[],
    oldPids: readonly number[],
    handles: Map<number, SocketHandle[]> = socketHandles(new Set(before.map((l) => l.inode))),
  ): ReloadSteer {
    const s = new ReloadSteer(new Set(before.map((l) => l.cookie)));
    for (const [key, ls] of byGroup(before)) {
      if (ls.length !== 1) {
        s.report.notes.push(`${key}: not steered, ${ls.length} listeners share it (a server balancing over them on purpose)`);
        continue;
      }
      const h = handles.get(ls[0]!.inode)?.find((x) => oldPids.includes(x.pid));
      if (!h) {
        s.report.notes.push(`${key}: not steered, no fd of it in the old server`);
        continue;
      }
      const why = steerThrough([h], 0);
      if (why) s.report.notes.push(`${key}: not steered, ${why}`);
      else {
        s.via.set(key, h);
        s.report.steered.push(key);
      }
    }
    return s;
  }

  get active(): boolean {
    return this.via.size > 0;
  }

  /**
   * Turns each steered group to its new socket: the kernel appends a joining socket, so in a group
   * of the old socket and one new one, the new one is number 1 (and once the old one has left, 1 is
   * past the end and the kernel hashes over what is left: the new one). A group that is not exactly
   * that stays on the old socket. Acts through the old server's fd from attach (no /proc scan): the
   * old server is still running. Returns whether every steered group was turned.
   */
  toNew(now: readonly Listener[]): boolean {
    if (this.via.size === 0) return false;
    const groups = byGroup(now);
    let all = true;
    for (const [key, h] of this.via) {
      const g = groups.get(key) ?? [];
      const olds = g.filter((m) => this.oldCookies.has(m.cookie)).length;
      const why = g.length !== 2 || olds !== 1 ? `the group is ${g.length} sockets (${olds} old)` : steerThrough([h], 1);
      if (why) {
        this.report.notes.push(`${key}: not turned to the new socket, ${why}`);
        all = false;
      } else this.report.toNew.push(key);
    }
    return all;
  }

  /** Detaches the program from each steered group, through a socket in it now (`now`: the port's listeners; the old server may be gone). */
  detach(now: readonly Listener[]): void {
    if (this.via.size === 0) return;
    const groups = byGroup(now.filter((l) => this.via.has(groupKey(l))));
    const handles = socketHandles(new Set([...groups.values()].flat().map((l) => l.inode)));
    for (const key of this.via.keys()) {
      const why = steerThrough(
        (groups.get(key) ?? []).flatMap((l) => handles.get(l.inode) ?? []),
        -1,
      );
      // Left on, a group sends new connections to its oldest socket (or hashes, once turned and the
      // old socket gone) until a later --stop-old replaces the program: what a reload wants anyway.
      if (why) this.report.notes.push(`${key}: the steer could not be undone (${why})`);
    }
    this.via.clear();
  }
}

/** How often the processes holding the new listeners are looked for again while they are not polled (a scan reads all of /proc). */
const HOLDER_RESCAN_MS = 25;

/**
 * Whether the new server polls its new listeners: each is registered in an epoll set of a process
 * holding it, so the server has reached its event loop and accepts from it. The holders are found
 * in /proc (fd links) once, and again every HOLDER_RESCAN_MS while not polled (a daemonizing server
 * binds in one process and serves in its child); each check then reads only their fdinfo.
 */
export class PollingWatch {
  private readonly old: Set<string>;
  private holders = new Map<number, number[]>();
  private scannedAt = -Infinity;

  constructor(before: readonly Listener[]) {
    this.old = new Set(before.map((l) => l.cookie));
  }

  polled(now: readonly Listener[]): boolean {
    const fresh = now.filter((l) => !this.old.has(l.cookie));
    if (fresh.length === 0) return false;
    if (this.check(fresh)) return true;
    const t = Number(process.hrtime.bigint() / 1_000_000n);
    if (t - this.scannedAt < HOLDER_RESCAN_MS && fresh.every((l) => this.holders.has(l.inode))) return false;
    this.scannedAt = t;
    this.holders = new Map([...socketHandles(new Set(fresh.map((l) => l.inode)))].map(([inode, hs]) => [inode, [...new Set(hs.map((h) => h.pid))]]));
    return this.check(fresh);
  }

  private check(fresh: readonly Listener[]): boolean {
    const targets = new Map<number, Set<number>>();
    const of = (pid: number) => targets.get(pid) ?? targets.set(pid, epollTargets(pid)).get(pid)!;
    return fresh.every((l) => (this.holders.get(l.inode) ?? []).some((pid) => of(pid).has(l.inode)));
  }
}

/** The inodes every epoll set of `pid` watches (fdinfo `tfd: ... ino:HEX` lines). */
export function epollTargets(pid: number): Set<number> {
  const out = new Set<number>();
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return out;
  }
  for (const fd of fds) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`) !== 'anon_inode:[eventpoll]') continue;
      for (const m of readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'latin1').matchAll(/^tfd:.*\bino:([0-9a-f]+)/gm)) out.add(parseInt(m[1]!, 16));
    } catch {
      // closed meanwhile, or the process is gone
    }
  }
  return out;
}
