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
 *   stats.json    totals and the last hold, for status and metrics
 *   watchdog.log  one line per release a watchdog did on its own (it cannot
 *                 write JSON); folded into stats.json by the next recordHold()
 *   hold.lock     flock(2)ed by the owner and its watchdog for the whole hold:
 *                 serialises holds, and every change of hold state happens under it
 *   setup.lock    flock(2)ed by setup and teardown
 *   holder.sock   the daemon's socket; daemon.pid its pid
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
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
    return join(this.dir, 'watchdog.log');
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
    rmSync(join(this.dir, 'setup.json'), { force: true });
  }

  readHold(): HoldRecord | undefined {
    return readJson<HoldRecord>(join(this.dir, 'hold.json'));
  }

  writeHold(r: HoldRecord): void {
    this.ensure();
    writeJson(join(this.dir, 'hold.json'), r);
  }

  removeHold(): void {
    rmSync(join(this.dir, 'hold.json'), { force: true });
  }

  /** The totals, with the watchdogs' own releases not yet folded in. */
  readStats(): StatsRecord {
    const s = readJson<StatsRecord>(join(this.dir, 'stats.json')) ?? { holds: 0, releasedTotal: 0, dropsTotal: 0, watchdogReleases: 0 };
    for (const j of this.readJournal()) addHold(s, j);
    return s;
  }

  /** The watchdogs' lines: `EPOCH_MS CAUSE TOOK_MS`. A torn or foreign line is skipped. */
  private readJournal(): LastHold[] {
    let text: string;
    try {
      text = readFileSync(this.journalPath, 'utf8');
    } catch {
      return [];
    }
    const out: LastHold[] = [];
    for (const line of text.split('\n')) {
      const m = /^(\d+) (owner-gone|max-hold|signal|watched-exited) (\d+)$/.exec(line);
      if (!m) continue;
      const cause: ReleaseKind = m[2] === 'max-hold' ? 'max-hold' : m[2] === 'signal' ? 'manual' : 'owner-gone';
      const took = Number(m[3]);
      out.push({
        startedAt: new Date(Number(m[1]) - took).toISOString(),
        durationMs: took,
        released: 0,
        drops: 0,
        reason: `released by the watchdog (${m[2]})`,
        cause,
      });
    }
    return out;
  }

  /** Adds one finished hold to the totals (and folds in the watchdogs' lines). Call under the hold lock. */
  recordHold(h: LastHold): void {
    this.ensure();
    const s = this.readStats();
    addHold(s, h);
    writeJson(join(this.dir, 'stats.json'), s);
    rmSync(this.journalPath, { force: true });
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

function addHold(s: StatsRecord, h: LastHold): void {
  s.holds += 1;
  s.releasedTotal += h.released;
  s.dropsTotal += h.drops;
  if (isSafetyNet(h.cause)) s.watchdogReleases += 1;
  s.lastHold = h;
}
