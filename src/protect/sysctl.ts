/**
 * Per-namespace kernel settings setup changes, and teardown puts back.
 *
 * net.ipv4.tcp_migrate_req (Linux 5.14+): when a SO_REUSEPORT listener closes,
 * the kernel moves the connections still in its queues (SYN-RECV and accepted-
 * but-not-yet-accept()ed) to another listener of the group, instead of
 * resetting them. The plug covers SYNs that arrive during the hold; this covers
 * those that had already arrived when it began and that the old process never
 * accepted - a window that grows on a starved CPU. HAProxy binds with
 * SO_REUSEPORT, so its reloads qualify. (It also applies to IPv6.)
 *
 * Written through /proc/sys of the target namespace: `nsenter --net` for
 * another namespace (setup time only; the hold path never spawns).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { requirePrograms } from '../host/programs.js';
import { netnsPath } from '../netlink/socket.js';

const MIGRATE_REQ = '/proc/sys/net/ipv4/tcp_migrate_req';

/** The setting's value, or undefined where this kernel has no such setting. */
function read(path: string, netns?: string): string | undefined {
  // A missing nsenter must not read as "this kernel has no such setting": that
  // would skip the setting silently.
  if (netns) requirePrograms(['nsenter', 'cat'], `to read ${path} in network namespace ${netns}`);
  try {
    return netns
      ? execFileSync('nsenter', [`--net=${netnsPath(netns)}`, 'cat', path], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
      : readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}

function write(path: string, value: string, netns?: string): void {
  if (netns) {
    requirePrograms(['nsenter', 'sh'], `to write ${path} in network namespace ${netns}`);
    execFileSync('nsenter', [`--net=${netnsPath(netns)}`, 'sh', '-c', `echo ${value} > ${path}`], { stdio: 'ignore' });
  } else writeFileSync(path, `${value}\n`);
}

/** Turns tcp_migrate_req on; returns the previous value, or undefined if this kernel has no such setting. */
export function enableMigrateReq(netns?: string): string | undefined {
  if (!netns && !existsSync(MIGRATE_REQ)) return undefined;
  const previous = read(MIGRATE_REQ, netns);
  if (previous === undefined) return undefined;
  if (previous !== '1') write(MIGRATE_REQ, '1', netns);
  return previous;
}

export function restoreMigrateReq(previous: string, netns?: string): void {
  if (read(MIGRATE_REQ, netns) !== previous) write(MIGRATE_REQ, previous, netns);
}

export function migrateReq(netns?: string): string | undefined {
  return read(MIGRATE_REQ, netns);
}
