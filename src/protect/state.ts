/**
 * synhold's own record of what it set up and what it is holding.
 *
 * sch_plug has no dump operation: the kernel cannot say whether a plug is
 * plugged, so this record is the only place that knows. It lives under /run
 * (tmpfs: gone after a reboot, as is every qdisc), one directory per network
 * namespace, because `ip netns exec` shares /run between namespaces.
 *
 *   setup.json    the config and what the backend created (written by setup)
 *   hold.json     present while a hold is on: owner and watchdog, since when, deadline
 *   stats.json    totals and the last hold, for status and metrics, up to the
 *                 holds still in holds.log
 *   holds.log     one line per finished hold since stats.json was written: a JSON
 *                 line from the owner, or `EPOCH_MS CAUSE TOOK_MS` from a watchdog
 *                 that released on its own (it cannot write JSON); folded into
 *                 stats.json when it grows past JOURNAL_FOLD_BYTES
 *   hold.lock     flock(2)ed by the owner and its watchdog for the whole hold:
 *                 serialises holds, and every change of hold state happens under it
 *   setup.lock    flock(2)ed by setup and teardown
 *   holder.sock   the daemon's socket; daemon.pid its pid
 */
import {
  closeSync,
  existsSync,
  fstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { netnsPath } from '../netlink/socket.js';
import { isNativeError, native } from '../native/addon.js';
import { ConfigError } from '../model/errors.js';
import type { BackendName, SetupConfig } from '../model/config.js';
import type { ProcessId } from './hold/process-id.js';
import { isSafetyNet, type ReleaseKind } from './hold/cause.js';

export interface SetupRecord {
  version: 1;
  config: SetupConfig;
  backend: BackendName;
  /** Why auto chose this backend (or "requested"). */
  backendReason: string;
  backendState: unknown;
  /** net.ipv4.tcp_migrate_req before setup turned it on, to restore at teardown. */
  previousMigrateReq?: string;
  createdAt: string;
}

export interface HoldRecord {
  /** The process that holds in the kernel and releases in the normal case (protect, the daemon, or `synhold plug`, which exits at once). */
  owner: ProcessId;
  /** The dead-man's switch (native/watchdog.c): signal it to release. */
  watchdog: ProcessId;
  /** The process the hold is for, when that is not the owner (the daemon's client). */
  client?: ProcessId;
  via: 'protect' | 'daemon' | 'plug';
  backend: BackendName;
  /** Epoch milliseconds. */
  since: number;
  /** Epoch milliseconds at which the holder releases whatever happens. */
  deadline: number;
}

export interface LastHold {
  startedAt: string;
  durationMs: number;
  released: number;
  drops: number;
  /** Why it ended (for people). */
  reason: string;
  cause: ReleaseKind;
}

export interface StatsRecord {
  holds: number;
  releasedTotal: number;
  dropsTotal: number;
  /** Holds released by a watchdog path (owner died, max-hold, recovery). */
  watchdogReleases: number;
  lastHold?: LastHold;
}

/**
 * The directory for a namespace: SYNHOLD_RUN_DIR (default /run/synhold) /
 * netns-<cookie>. The kernel's netns cookie is never reused, while a
 * namespace's inode number is reused as soon as it is freed: keyed by inode, a
 * new namespace could inherit a dead one's record of a plug. (Kernels before
 * 5.14 have no cookie; the inode is used there.)
 */
export function stateDir(netns?: string): string {
  const base = process.env.SYNHOLD_RUN_DIR ?? '/run/synhold';
  const path = netns ? netnsPath(netns) : null;
  let id: string | null;
  try {
    id = native().netnsCookie(path);
  } catch (e) {
    if (isNativeError(e) && e.errno === 2) throw new ConfigError(`no network namespace ${netns} (${path})`);
    throw e;
  }
  return join(base, id !== null ? `netns-${id}` : `ns-ino-${statSync(path ?? '/proc/self/ns/net').ino}`);
}

function readJson<T>(path: string): T | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/** Written to a temporary name and renamed: a reader never sees half a file. */
function writeJson(path: string, value: unknown): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, path);
}

export class StateStore {
  constructor(readonly dir: string) {}

  static for(netns?: string): StateStore {
    return new StateStore(stateDir(netns));
  }

  ensure(): void {
    // Every hold calls this: one stat, not a recursive mkdir's walk (slow where system calls are, as in the kernel lab).
    if (!existsSync(this.dir)) mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }

  get holdLockPath(): string {
    return join(this.dir, 'hold.lock');
  }

  get holdPath(): string {
    return join(this.dir, 'hold.json');
  }

  get journalPath(): string {
    return join(this.dir, 'holds.log');
  }

  get daemonSocketPath(): string {
    return join(this.dir, 'holder.sock');
  }

  get daemonPidPath(): string {
    return join(this.dir, 'daemon.pid');
  }

  get setupLockPath(): string {
    return join(this.dir, 'setup.lock');
  }

  readSetup(): SetupRecord | undefined {
    return readJson<SetupRecord>(join(this.dir, 'setup.json'));
  }

  writeSetup(r: SetupRecord): void {
    this.ensure();
    writeJson(join(this.dir, 'setup.json'), r);
  }

  removeSetup(): void {
    removeFile(join(this.dir, 'setup.json'));
  }

  readHold(): HoldRecord | undefined {
    return readJson<HoldRecord>(join(this.dir, 'hold.json'));
  }

  writeHold(r: HoldRecord): void {
    this.ensure();
    writeJson(join(this.dir, 'hold.json'), r);
  }

  removeHold(): void {
    removeFile(join(this.dir, 'hold.json'));
  }

  /** The totals, with the holds not yet folded in from the journal. */
  readStats(): StatsRecord {
    const s = readJson<StatsRecord>(join(this.dir, 'stats.json')) ?? { holds: 0, releasedTotal: 0, dropsTotal: 0, watchdogReleases: 0 };
    for (const j of this.readJournal()) addHold(s, j);
    return s;
  }

  /** The journal's holds, oldest first. A torn or foreign line is skipped. */
  private readJournal(): LastHold[] {
    let text: string;
    try {
      text = readFileSync(this.journalPath, 'utf8');
    } catch {
      return [];
    }
    const out: LastHold[] = [];
    for (const line of text.split('\n')) {
      const h = line.startsWith('{') ? ownerLine(line) : watchdogLine(line);
      if (h) out.push(h);
    }
    return out;
  }

  /**
   * Adds one finished hold: one appended line, folded into stats.json once the journal passes
   * JOURNAL_FOLD_BYTES. Why not stats.json each time: rewriting it (write, then rename over the
   * old one) is what a reader needs to never see half a file, and on a disk-backed /run (ext4
   * flushes a file renamed over another) that rename took about 4 ms of every protect run, after
   * the release but before protect exits. Call under the hold lock: the fold and the watchdog's
   * appends never interleave.
   */
  recordHold(h: LastHold): void {
    this.ensure();
    const fd = openSync(this.journalPath, 'a', 0o600);
    let size: number;
    try {
      // The leading newline ends a line left torn (a write cut short on a full /run), so that only
      // that line is lost, not this one too; the empty line it may make is skipped.
      writeSync(fd, `\n${JSON.stringify(h)}\n`);
      size = fstatSync(fd).size;
    } finally {
      closeSync(fd);
    }
    if (size < JOURNAL_FOLD_BYTES) return;
    writeJson(join(this.dir, 'stats.json'), this.readStats());
    removeFile(this.journalPath);
  }

  /** Removes the whole directory (teardown). Only with the hold lock held: its file goes too. */
  removeAll(): void {
    try {
      rmSync(this.dir, { recursive: true, force: true, maxRetries: 3, retryDelay: 5 });
    } catch (e) {
      // A command racing teardown (a protect waiting for the hold lock) re-creates its
      // lock file meanwhile. Everything that says "set up" or "holding" is gone; an
      // empty lock file may stay, and goes with the next teardown or reboot (tmpfs).
      if ((e as NodeJS.ErrnoException).code !== 'ENOTEMPTY') throw e;
    }
  }
}

/** About 400 holds: bounds what status reads and parses, and makes the fold rare. */
export const JOURNAL_FOLD_BYTES = 64 * 1024;

/** An owner's line: the LastHold it recorded, if the line is whole and has the fields. */
function ownerLine(line: string): LastHold | undefined {
  try {
    const h = JSON.parse(line) as Partial<LastHold>;
    const ok =
      typeof h.startedAt === 'string' &&
      typeof h.durationMs === 'number' &&
      typeof h.released === 'number' &&
      typeof h.drops === 'number' &&
      typeof h.reason === 'string' &&
      typeof h.cause === 'string';
    return ok ? (h as LastHold) : undefined;
  } catch {
    return undefined;
  }
}

/** A watchdog's line: `EPOCH_MS CAUSE TOOK_MS` (native/watchdog.c). */
function watchdogLine(line: string): LastHold | undefined {
  const m = /^(\d+) (owner-gone|max-hold|signal|watched-exited) (\d+)$/.exec(line);
  if (!m) return undefined;
  const cause: ReleaseKind = m[2] === 'max-hold' ? 'max-hold' : m[2] === 'signal' ? 'manual' : 'owner-gone';
  const took = Number(m[3]);
  return {
    startedAt: new Date(Number(m[1]) - took).toISOString(),
    durationMs: took,
    released: 0,
    drops: 0,
    reason: `released by the watchdog (${m[2]})`,
    cause,
  };
}

function addHold(s: StatsRecord, h: LastHold): void {
  s.holds += 1;
  s.releasedTotal += h.released;
  s.dropsTotal += h.drops;
  if (isSafetyNet(h.cause)) s.watchdogReleases += 1;
  s.lastHold = h;
}

/**
 * Removes a file that may not be there. unlinkSync, not rmSync({ force: true }): rmSync loads its
 * recursive-removal module on every call (about 0.6 ms), on every protect's release.
 */
function removeFile(path: string): void {
  try {
    unlinkSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}
