/**
 * What a `--netns` target names: a network namespace given by name (as `ip -n
 * NAME`: /run/netns/NAME), by path (a bind mount such as /run/netns/X, or
 * /proc/PID/ns/net), or by a process in it (`pid:PID`, as `nsenter -t PID`).
 * A bare number is a name, as it is for `ip netns`: a namespace may be called
 * 1234, and reading it as a PID would act in whichever namespace that process
 * is in. The error for a missing name that is a number says how to name a PID.
 *
 * The target is checked before anything acts on it (it exists, it is an nsfs
 * file, it is a network namespace: setns(CLONE_NEWNET) accepts it), so a wrong
 * one is one line and exit 2 with nothing changed.
 *
 * A namespace reached through a process (`pid:PID`, /proc/PID/ns/net) is pinned:
 * this process keeps the nsfs file open and every layer uses
 * /proc/<our pid>/fd/<fd>. Without that, a command that runs for a while
 * (protect, the daemon) would re-open /proc/PID/ns/net at each step: if the
 * process exited, the next step fails; if its PID were reused, the next step
 * would act in another namespace. (Not /proc/self/fd: children such as nsenter
 * resolve that to themselves.) A /run/netns name is not pinned: it is what
 * `ip netns` manages, and `ip netns delete` must still be able to free it.
 *
 * The state directory (protect/state.ts) is keyed by the namespace's cookie, so
 * one namespace named in any of these ways shares one record and one hold lock.
 */
import { closeSync, openSync, statSync, statfsSync } from 'node:fs';
import { resolve } from 'node:path';
import { isNativeError, native } from '../native/addon.js';
import { ConfigError, PermissionError, SynholdError } from '../model/errors.js';

/** statfs(2) f_type of nsfs, the filesystem of /proc/PID/ns/* and of `ip netns` bind mounts (linux/magic.h NSFS_MAGIC). */
const NSFS_MAGIC = 0x6e736673;

export interface NetnsTarget {
  /** The path every layer opens (netlink sockets, nsenter --net=). */
  path: string;
  /** What the user wrote, for messages. */
  given: string;
  /** The fd kept open when the namespace was reached through a process. */
  pinnedFd?: number;
}

function bad(message: string): SynholdError {
  return new ConfigError(message);
}

/** The target exists but this process may not use it: not bad input (exit 1). */
function denied(given: string, shown: string, e: NodeJS.ErrnoException): SynholdError | undefined {
  if (e.code !== 'EACCES' && e.code !== 'EPERM') return undefined;
  return new PermissionError(
    `--netns ${given}: ${shown}: permission denied (another process's namespace needs root and ptrace access to it: CAP_SYS_PTRACE, or the same user)`,
  );
}

/** The path a target names, before any check. */
export function netnsTargetPath(given: string): string {
  const pid = /^pid:(.*)$/.exec(given);
  if (pid) {
    if (!/^[1-9]\d{0,9}$/.test(pid[1]!)) throw bad(`--netns ${given}: "${pid[1]}" is not a process id`);
    return `/proc/${pid[1]}/ns/net`;
  }
  if (given.includes('/')) return resolve(given);
  if (given === '.' || given === '..') throw bad(`--netns "${given}" is not a namespace name`);
  return `/run/netns/${given}`;
}

/** What is wrong with a path that does not exist, for each way of naming it. */
function missing(given: string, path: string): SynholdError {
  const pid = /^\/proc\/(\d+)\//.exec(path)?.[1];
  if (pid) return bad(`--netns ${given}: no process ${pid} (${path})`);
  if (given.includes('/')) return bad(`--netns ${given}: no network namespace at ${path}`);
  const hint = /^\d+$/.test(given) ? `; for the namespace of process ${given}, use --netns pid:${given}` : '';
  return bad(`--netns ${given}: no network namespace named ${given} (${path})${hint}`);
}

/**
 * Checks that `open` (the target's path, or the fd pinning it) is a network
 * namespace this process may enter; messages name `shown`, the target's own path.
 */
function checkNetns(given: string, open: string, shown: string): void {
  let type: number;
  try {
    statSync(open);
    type = statfsSync(open).type;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw missing(given, shown);
    throw denied(given, shown, e as NodeJS.ErrnoException) ?? bad(`--netns ${given}: ${shown}: ${(e as Error).message}`);
  }
  // A regular file here is what a half-finished `ip netns add/delete` leaves in /run/netns.
  if (type !== NSFS_MAGIC) throw bad(`--netns ${given}: ${shown} is not a namespace (not an nsfs file)`);
  try {
    native().netnsCookie(open);
  } catch (e) {
    if (isNativeError(e) && e.errno === 22) throw bad(`--netns ${given}: ${shown} is a namespace, but not a network namespace`);
    if (isNativeError(e) && (e.errno === 1 || e.errno === 13))
      throw new PermissionError(`--netns ${given}: entering ${shown} needs CAP_SYS_ADMIN (and CAP_NET_ADMIN there)`);
    throw e;
  }
}

/**
 * Resolves and checks a --netns target; throws SynholdError ERR_BAD_INPUT (the
 * CLI's exit 2) for one that does not name a network namespace.
 */
export function resolveNetns(given: string): NetnsTarget {
  if (given === '') throw bad('--netns needs a namespace: a name, a path, or pid:PID');
  const path = netnsTargetPath(given);
  if (!path.startsWith('/proc/')) {
    checkNetns(given, path, path);
    return { path, given };
  }
  // Open first, then check what was opened: the check and every later use see the same namespace.
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw missing(given, path);
    throw denied(given, path, e as NodeJS.ErrnoException) ?? bad(`--netns ${given}: ${path}: ${(e as Error).message}`);
  }
  const pinned = `/proc/${process.pid}/fd/${fd}`;
  try {
    checkNetns(given, pinned, path);
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  return { path: pinned, given, pinnedFd: fd };
}
