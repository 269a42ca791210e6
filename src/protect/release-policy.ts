/**
 * When may protect release? A pure decision, given what protect has observed:
 * the listening sockets at the start of the hold and now, CMD's state, and the
 * options. protect's loop feeds it and acts on the answer; the tests drive it
 * with tables.
 *
 * The rules:
 * - The sockets settled (reloadSettled: every protected port has a new listener
 *   and none of the old ones), twice in a row (one dump of the listening table is
 *   not an atomic snapshot: a dump can miss a socket that is still there), or
 *   once when the kernel itself reported every old listener freed (sock_diag's
 *   destroy notification: then "gone" is not a dump's word), and --ready
 *   answers: release.
 * - CMD failed (could not run, non-zero exit): release; nothing will come.
 * - CMD exited 0, and every port served before the hold is served again:
 *   - settled, or the very sockets from before (fd hand-over such as haproxy -x,
 *     or a command that did not touch the server), or --release-on exit: release;
 *   - some ports swapped and the others kept their very sockets (one service of
 *     several restarted, under a setup that protects them all): release;
 *   - a new listener beside a still-open old one: keep holding for at most
 *     --settle-wait after the exit (the old process closing late), then release
 *     and say the old one is not closing.
 * - --release-on swap, for a reload command that returns before the reload is done
 *   (`kill -USR2`, `systemctl reload`, `nginx -s reload`, a master CLI's `reload`):
 *   CMD's exit says nothing; release once the sockets have settled, whenever that is
 *   (max-hold bounds it), or at once if CMD failed.
 *   A server that hands its listening socket over instead of rebinding (HAProxy
 *   master-worker: the re-executed master passes `-x sockpair@N` to the new worker)
 *   swaps processes, not sockets: the very socket from before stays open, so "old
 *   one gone" never comes and the hold would last until max-hold, every reload.
 *   sock_diag cannot see that swap; the processes holding the socket (protect reads
 *   them from /proc/PID/fd when asked, `holders`) can: every old listener still open,
 *   no other listener on its port, and held now only by processes that were not
 *   running when the hold began (the old worker closed its copy, a new one has it) is
 *   handed over. Settled, twice in a row, like a swap. Not merely "not holding it
 *   then": a new worker takes the socket over during its start, after the master lists
 *   it, so a reload that follows the previous one closely would see that earlier
 *   hand-over finish and release before its own (measured: 1 of 40 reloads).
 * - A port nobody served before the hold is not waited for.
 * - Otherwise wait (max-hold, protect's --timeout and signals are protect's own exits).
 */
import { reloadSettled, type Listener } from '../sockdiag/inet_diag.js';
import type { ReleaseCause } from './hold/cause.js';

/**
 * Default settle-wait. `haproxy -sf` signals the old process before the command
 * exits, so an old listener still open then normally closes within milliseconds
 * (tens on a loaded one-CPU lab). One that outlives this is not closing: an
 * orphan left by two reloads that raced on the pidfile, or a -sf that named the
 * wrong pids. Holding new clients on its account until max-hold helps nobody.
 * --stop-old waits as long for the new server to listen after CMD exits, and for
 * the old one to close after its signal.
 */
export const DEFAULT_SETTLE_WAIT_MS = 2000;

export interface PolicyOptions {
  releaseOn: 'sockets' | 'exit' | 'swap';
  settleWaitMs: number;
  ports: readonly number[];
}

export interface Observation {
  /** Listeners when the hold began. */
  before: readonly Listener[];
  now: readonly Listener[];
  /** How many polls in a row (including this one) found the sockets settled. */
  settledPolls: number;
  /** The kernel reported every old listener freed (destroy notifications, by cookie). */
  oldGoneConfirmed?: boolean;
  /** Whether --ready answered (true when not asked for). */
  readyOk: boolean;
  /** CMD's end, once it ended. */
  command?: { failed: boolean; msSinceExit: number };
  /**
   * --release-on swap only: the pids holding each listening socket (by inode), when
   * the hold began and now. Absent: not looked at (the hand-over rule stays off).
   */
  holders?: {
    before: ReadonlyMap<number, readonly number[]>;
    now: ReadonlyMap<number, readonly number[]>;
    /** Every pid running when the hold began. */
    running: ReadonlySet<number>;
  };
}

export type Decision = { release: ReleaseCause } | { wait: true; settled: boolean };

const socketsKey = (ls: readonly Listener[]) =>
  ls
    .map((l) => l.cookie)
    .sort()
    .join(',');

/**
 * The same listening sockets as before, each now held only by processes that were not
 * running when the hold began: the server handed them over (see the header). Ports
 * that had no listener before are not looked at, as in the swap rule.
 */
export function handedOver(
  before: readonly Listener[],
  now: readonly Listener[],
  holders: NonNullable<Observation['holders']>,
  ports: readonly number[],
): { settled: boolean; reason: string } {
  const clauses: string[] = [];
  const served = [...new Set(before.filter((l) => ports.includes(l.port)).map((l) => l.port))].sort((a, b) => a - b);
  if (served.length === 0) return { settled: false, reason: 'no listener before the hold' };
  for (const port of served) {
    const old = before.filter((l) => l.port === port);
    const cur = now.filter((l) => l.port === port);
    if (socketsKey(old) !== socketsKey(cur)) return { settled: false, reason: `port ${port}: not the same sockets as before` };
    for (const l of old) {
      const was = holders.before.get(l.inode) ?? [];
      const is = holders.now.get(l.inode) ?? [];
      // No known holder before (unreadable /proc/PID/fd): nothing to call a hand-over.
      if (was.length === 0 || is.length === 0 || is.some((pid) => holders.running.has(pid)))
        return {
          settled: false,
          reason: `port ${port}: sk:${l.cookie} held by pid ${is.join(',') || 'none'} (before: ${was.join(',') || 'none'}): no process started since holds it alone`,
        };
      clauses.push(`port ${port}: sk:${l.cookie} handed over from pid ${was.join(',')} to pid ${is.join(',')} (same socket)`);
    }
  }
  return { settled: true, reason: clauses.join('; ') };
}

/**
 * Each protected port either has the very sockets it had before (CMD did not touch it) or has
 * swapped (a new listener, none of the old), and at least one swapped: the swaps' reasons, else
 * undefined.
 */
function touchedPortsSwapped(before: readonly Listener[], now: readonly Listener[], ports: readonly number[]): string | undefined {
  const reasons: string[] = [];
  for (const port of ports) {
    const old = before.filter((l) => l.port === port);
    const cur = now.filter((l) => l.port === port);
    if (socketsKey(old) === socketsKey(cur)) continue;
    const s = reloadSettled(old, cur, [port]);
    if (!s.settled) return undefined;
    reasons.push(s.reason);
  }
  return reasons.length ? reasons.join('; ') : undefined;
}

export function decide(o: Observation, opts: PolicyOptions): Decision {
  let settled = opts.releaseOn === 'exit' ? { settled: false, reason: '' } : reloadSettled(o.before, o.now, opts.ports);
  if (!settled.settled && opts.releaseOn === 'swap' && o.holders) {
    const h = handedOver(o.before, o.now, o.holders, opts.ports);
    if (h.settled) settled = h;
  }
  // The kernel's word on the old listeners stands for the second poll, where CMD's exit would not
  // decide anyway (still running, or --release-on swap); after an exit the rules below name it.
  const confirmed = o.settledPolls + 1 >= 2 || (o.oldGoneConfirmed === true && (!o.command || opts.releaseOn === 'swap'));
  if (settled.settled && confirmed && o.readyOk) return { release: { kind: 'reload-done', detail: settled.reason } };
  const c = o.command;
  if (!c) return { wait: true, settled: settled.settled };
  if (c.failed) return { release: { kind: 'command-failed' } };
  if (opts.releaseOn === 'swap') return { wait: true, settled: settled.settled };
  const listening = new Set(o.now.map((l) => l.port));
  const servedBefore = new Set(o.before.map((l) => l.port));
  if (![...servedBefore].every((p) => listening.has(p)) || !o.readyOk) return { wait: true, settled: settled.settled };
  if (opts.releaseOn === 'exit' || socketsKey(o.now) === socketsKey(o.before)) return { release: { kind: 'command-exited' } };
  if (settled.settled) return { release: { kind: 'command-exited', detail: `${settled.reason}, after the command exited` } };
  // One service of several restarted (`systemctl restart` of one unit, under a setup that protects
  // every port of the host): the ports CMD did not touch keep their very sockets; the others swapped.
  const partial = touchedPortsSwapped(o.before, o.now, opts.ports);
  if (partial) return { release: { kind: 'command-exited', detail: `${partial}, after the command exited; the other ports untouched` } };
  if (c.msSinceExit >= opts.settleWaitMs) {
    return {
      release: { kind: 'command-exited', detail: `command exited; ${settled.reason} ${Math.round(c.msSinceExit)} ms later (--settle-wait): not closing` },
    };
  }
  return { wait: true, settled: false };
}

/**
 * --stop-old (stop-old.ts): the new server is started beside the old one (both listening, as
 * SO_REUSEPORT allows), and protect stops the old one itself, holding only around that stop.
 * Is the new server up? Every listener served before (by port, family and address) has a
 * counterpart that is not one of the old sockets: a dual-stack server is up once both families
 * are, not at the first one. Ports nobody served before are not waited for.
 */
export function replacementsUp(before: readonly Listener[], now: readonly Listener[], ports: readonly number[]): { up: boolean; reason: string } {
  const old = new Set(before.map((l) => l.cookie));
  const key = (l: Listener) => `${l.family} ${l.address} port ${l.port}`;
  const wanted = [...new Set(before.filter((l) => ports.includes(l.port)).map(key))].sort();
  if (wanted.length === 0) return { up: false, reason: 'no listener before' };
  const fresh = new Set(now.filter((l) => !old.has(l.cookie)).map(key));
  const missing = wanted.filter((k) => !fresh.has(k));
  if (missing.length > 0) return { up: false, reason: `no new listener yet on ${missing.join(', ')}` };
  return { up: true, reason: `new listener up on ${wanted.join(', ')}` };
}

export interface StopOldObservation {
  before: readonly Listener[];
  now: readonly Listener[];
  /** Whether --ready answered (true when not asked for). */
  readyOk: boolean;
  command?: { failed: boolean; msSinceExit: number };
  /**
   * Whether the new server polls its new listeners (steer.ts: each is in an epoll set of a process
   * holding it), and since when they are all up; undefined when not checked (taken as serving).
   */
  serving?: { now: boolean; upForMs: number };
}

/**
 * When to stop the old server, before any hold:
 * - CMD failed: never (the old server keeps serving; nothing was held);
 * - the new server is up (replacementsUp), --ready answers if asked, and it polls its new listeners
 *   where protect can see that (steer.ts), --settle-wait after they are up at most: stop the old
 *   one, whether CMD has exited 0 (a daemonizing start such as `haproxy -D`) or still runs (the
 *   server in the foreground). A listening socket queues connections until its server accepts
 *   them, so a listener that is up but not yet polled would keep what the kernel gives it once the
 *   old one has closed for the rest of the server's start-up (the p99.9 tail, docs/PROTECT.md);
 * - CMD exited 0 and the new server is not up --settle-wait later: never (it may have failed
 *   after daemonizing, or listen elsewhere; stopping the old one would leave no server);
 * - otherwise wait.
 */
export type StopOldDecision = { wait: true } | { stop: string } | { leave: string; commandFailed: boolean };

export function decideStopOld(o: StopOldObservation, opts: { ports: readonly number[]; settleWaitMs: number }): StopOldDecision {
  const c = o.command;
  if (c?.failed) return { leave: 'the command failed', commandFailed: true };
  const up = replacementsUp(o.before, o.now, opts.ports);
  if (up.up && o.readyOk) {
    if (!o.serving || o.serving.now) return { stop: `${up.reason}${o.serving ? ' and polled' : ''}` };
    if (o.serving.upForMs >= opts.settleWaitMs)
      return { stop: `${up.reason}, not seen polled in ${Math.round(o.serving.upForMs)} ms (--settle-wait; a server without epoll?)` };
    return { wait: true };
  }
  if (c && c.msSinceExit >= opts.settleWaitMs)
    return {
      leave: `the command exited but ${up.up ? '--ready did not answer' : up.reason} ${Math.round(c.msSinceExit)} ms later (--settle-wait)`,
      commandFailed: false,
    };
  return { wait: true };
}
