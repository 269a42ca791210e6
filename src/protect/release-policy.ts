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
 *   - a new listener beside a still-open old one: keep holding for at most
 *     --settle-wait after the exit (the old process closing late), then release
 *     and say the old one is not closing.
 * - --release-on swap, for a reload command that returns before the reload is done
 *   (`kill -USR2`, `systemctl reload`, `nginx -s reload`, a master CLI's `reload`):
 *   CMD's exit says nothing; release once the sockets have settled, whenever that is
 *   (max-hold bounds it), or at once if CMD failed.
 * - A port nobody served before the hold is not waited for.
 * - Otherwise wait (max-hold, protect's --timeout and signals are protect's own exits).
 */
import { reloadSettled, type Listener } from '../sockdiag/inet_diag.js';
import type { ReleaseCause } from './hold/cause.js';

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
}

export type Decision = { release: ReleaseCause } | { wait: true; settled: boolean };

const socketsKey = (ls: readonly Listener[]) =>
  ls
    .map((l) => l.cookie)
    .sort()
    .join(',');

export function decide(o: Observation, opts: PolicyOptions): Decision {
  const settled = opts.releaseOn === 'exit' ? { settled: false, reason: '' } : reloadSettled(o.before, o.now, opts.ports);
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
  if (c.msSinceExit >= opts.settleWaitMs) {
    return {
      release: { kind: 'command-exited', detail: `command exited; ${settled.reason} ${Math.round(c.msSinceExit)} ms later (--settle-wait): not closing` },
    };
  }
  return { wait: true, settled: false };
}
