/**
 * One hold, from lock to release: what protect and the daemon do for each hold
 * they own, and what `synhold plug` does before leaving the hold to its watchdog.
 *
 * Order, so that no fault between two steps can leave traffic held:
 *   1. take the hold lock (bounded wait; a signal ends the wait and holds nothing)
 *   2. end what a dead predecessor left on (its record, found under the lock)
 *   3. prepare: open sockets, resolve devices, check the steering is there
 *   4. start the watchdog with the release encoded in advance (it now has the
 *      lock too, and releases if this process dies from here on)
 *   5. hold in the kernel
 *   6. write the record (a failure here releases at once)
 * Release: tell the watchdog we release ('B'), release in-process (retried),
 * record, tell it we are done ('X'), close, unlock. If our release fails, the
 * watchdog finishes it with its own copy; if that fails too, closing the
 * sockets is the last resort (an unbound queue lets SYNs through). If the
 * watchdog lets go on its own (max-hold, `synhold release`) while we live, we
 * undo under the lock what its prepared release cannot (afterWatchdogRelease).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { backendFor } from '../../backends/index.js';
import { holdMayBeOn, type ActiveHold, type BackendContext, type PreparedHold, type ReleaseResult } from '../../backends/backend.js';
import type { BackendName } from '../../model/config.js';
import { BusyError, NotSetUpError, ReleaseError, StateError } from '../../model/errors.js';
import { Rtnl } from '../../rtnl/rtnl.js';
import { FileLock } from '../lock.js';
import { StateStore } from '../state.js';
import { describeCause, type ReleaseCause } from './cause.js';
import { processId, type ProcessId } from './process-id.js';
import { failpoint } from './failpoint.js';
import { recoverUnderLock } from './recover.js';
import { Watchdog, type WatchdogEnd } from './watchdog.js';

export interface HoldArgs {
  netns?: string;
  maxHoldMs: number;
  lockWaitMs: number;
  via: 'protect' | 'daemon' | 'plug';
  /** 'process' (default): the hold ends if this process dies. 'none': a manual hold, left to its watchdog (detach()). */
  owner?: 'process' | 'none';
  /** The process the hold is for, if not this one (the daemon's client): the hold ends when it exits. */
  client?: ProcessId;
  /** Aborts the lock wait and the steps before the kernel hold: then nothing is held. */
  signal?: AbortSignal;
}

export interface Held {
  since: number;
  deadline: number;
  backend: BackendName;
  watchdogPid: number;
}

export interface Released {
  durationMs: number;
  released: number;
  drops: number;
  cause: ReleaseCause;
  /** Who let go: this process, or the watchdog on its own (max-hold, synhold release, client gone). */
  by: 'owner' | 'watchdog';
  /** Packets of other NFQUEUE users dropped with this hold's steering (ReleaseResult.othersCut). */
  othersCut?: number;
  /** The release's wait for them, included in durationMs (ReleaseResult.othersWaitMs). */
  othersWaitMs?: number;
  /**
   * Why the hold's steering is still in place after the watchdog let go on its own (afterWatchdogRelease
   * failed or took longer than AFTER_WATCHDOG_MS). A cost on the path, not a hold: the next hold,
   * `synhold release` or teardown removes it. Absent: removed, or none to remove.
   */
  steeringLeft?: string;
}

/** What protect holds through: a session of its own, or the daemon's (daemon-client.ts). */
export interface HoldHandle {
  readonly held: Held;
  readonly done: Promise<Released>;
  release(cause: ReleaseCause): Promise<Released>;
}

/** How long past the deadline the owner waits for a stopped watchdog before releasing itself. */
const BACKUP_MS = 300;
const RELEASE_ATTEMPTS = 3;
/**
 * How long the owner spends, under the hold lock, removing what the watchdog's release left (a few
 * netlink round trips: milliseconds, even in the kernel lab). Bounded so that a kernel that does not
 * answer (each request may wait 5 s) keeps neither the lock nor `done` for long.
 */
const AFTER_WATCHDOG_MS = 2000;

export class HoldSession {
  readonly held: Held;
  /** Resolves once released, whoever released. */
  readonly done: Promise<Released>;
  private releasing?: Promise<Released>;
  private letGo = false;
  private resolveDone!: (r: Released) => void;
  private readonly t0 = process.hrtime.bigint();
  private readonly backup: NodeJS.Timeout;

  private constructor(
    private readonly store: StateStore,
    private readonly lock: FileLock,
    private readonly rt: Rtnl,
    private readonly prepared: PreparedHold,
    private readonly active: ActiveHold,
    private readonly watchdog: Watchdog,
    held: Held,
  ) {
    this.held = held;
    this.done = new Promise((r) => (this.resolveDone = r));
    this.backup = setTimeout(() => void this.release({ kind: 'max-hold' }).catch(() => undefined), held.deadline - Date.now() + BACKUP_MS);
    void watchdog.ended.then((end) => this.onWatchdogEnd(end));
  }

  static async start(args: HoldArgs): Promise<HoldSession> {
    const store = StateStore.for(args.netns);
    // No ensure(): a hold needs a setup, whose record lives in the directory; creating the
    // directory here would race teardown's removal of it.
    const notSetUp = () => new NotSetUpError('synhold is not set up here; run `synhold setup --port P` first');
    if (!store.readSetup()) throw notSetUp();
    const lock = await FileLock.acquire(store.holdLockPath, args.lockWaitMs, args.signal);
    if (!lock) {
      const h = store.readHold();
      throw new BusyError(
        `another hold is in progress${h ? ` (${h.via} pid ${h.owner.pid}, watchdog pid ${h.watchdog.pid})` : ''} and did not end within ${args.lockWaitMs} ms`,
      );
    }
    // Read under the lock: a teardown (and maybe a new setup) may have run while we waited.
    const setup = store.readSetup();
    if (!setup) {
      lock.release();
      throw notSetUp();
    }
    const rt = args.netns ? Rtnl.open({ netns: args.netns }) : Rtnl.open();
    const ctx: BackendContext = args.netns ? { rt, netns: args.netns } : { rt };
    let prepared: PreparedHold | undefined;
    let watchdog: Watchdog | undefined;
    let active: ActiveHold | undefined;
    try {
      await recoverUnderLock(store, setup, args.netns);
      prepared = await backendFor(setup.backend).prepare(setup.backendState, ctx);
      watchdog = Watchdog.start({
        fallback: prepared.fallback,
        deadlineMs: args.maxHoldMs,
        owner: args.owner ?? 'process',
        ...(args.client ? { watchPid: args.client.pid } : {}),
        lockFd: lock.fd,
        recordPath: store.holdPath,
        journalPath: store.journalPath,
      });
      args.signal?.throwIfAborted();
      active = await prepared.start();
      failpoint('held');
      const since = Date.now();
      const held: Held = { since, deadline: since + args.maxHoldMs, backend: setup.backend, watchdogPid: watchdog.pid };
      store.writeHold({
        owner: processId(process.pid)!,
        watchdog: watchdog.id,
        ...(args.client ? { client: args.client } : {}),
        via: args.via,
        backend: setup.backend,
        since,
        deadline: held.deadline,
      });
      return new HoldSession(store, lock, rt, prepared, active, watchdog, held);
    } catch (e) {
      // Nothing may stay held: release in-process if the hold began, else let the
      // watchdog send its (harmless) release; then close and unlock.
      if (active && watchdog) {
        watchdog.beginRelease();
        const ok = await active.release().then(
          () => true,
          () => false,
        );
        if (ok) watchdog.stand();
        else watchdog.takeOver();
        await watchdog.ended;
      } else if (watchdog) {
        // A start that failed part-way and whose own undo failed too: the hold may be on, and the
        // watchdog sends its release before it goes.
        if (holdMayBeOn(e)) watchdog.takeOver();
        else watchdog.stand();
        await watchdog.ended;
      }
      prepared?.close();
      rt.close();
      lock.release();
      throw e;
    }
  }

  /** Releases (once); concurrent and later calls share the first call's outcome. */
  release(cause: ReleaseCause): Promise<Released> {
    this.releasing ??= this.ownerRelease(cause);
    return this.releasing;
  }

  /**
   * For a manual hold: leave it to the watchdog (max-hold, or `synhold release`)
   * and let this process exit. The watchdog keeps the lock and the sockets.
   */
  detach(): void {
    clearTimeout(this.backup);
    this.releasing ??= new Promise(() => undefined);
    this.watchdog.detach();
    this.prepared.close();
    this.rt.close();
    this.lock.release();
  }

  /**
   * False once the traffic is let go and the hold record removed, before the watchdog has exited
   * (up to 200 ms more): what a metrics scrape or a status in that gap must report.
   */
  get holding(): boolean {
    return !this.letGo;
  }

  private elapsedMs(): number {
    return Number(process.hrtime.bigint() - this.t0) / 1e6;
  }

  private async ownerRelease(cause: ReleaseCause): Promise<Released> {
    clearTimeout(this.backup);
    const wd = this.watchdog;
    // The watchdog may have let go already (its exit is being reported): that release stands.
    if (wd.end?.kind === 'released') return this.watchdogReleased(wd.end);
    wd.beginRelease();
    failpoint('releasing');
    let result: ReleaseResult = { released: 0, drops: 0 };
    let failure: Error | undefined;
    for (let attempt = 0; attempt < RELEASE_ATTEMPTS; attempt++) {
      try {
        result = await this.active.release();
        failure = undefined;
        break;
      } catch (e) {
        failure = e as Error;
      }
    }
    const durationMs = this.elapsedMs();
    let recordError: Error | undefined;
    if (failure) {
      // Let the watchdog finish with its own copy of the release.
      wd.takeOver();
      const end = await Promise.race([wd.ended, sleep(3000, undefined, { ref: false })]);
      if (end?.kind === 'released') {
        this.letGo = true;
        this.close();
        const r: Released = { durationMs, released: 0, drops: 0, cause, by: 'watchdog' };
        this.resolveDone(r);
        return r;
      }
      // Last resort: no process of ours keeps the sockets (an unbound queue passes SYNs).
      wd.kill();
    } else {
      try {
        this.letGo = true;
        this.store.removeHold();
        this.store.recordHold({
          startedAt: new Date(this.held.since).toISOString(),
          durationMs,
          released: result.released,
          drops: result.drops,
          reason: describeCause(cause),
          cause: cause.kind,
        });
      } catch (e) {
        // /run full or read-only: the traffic is released all the same; say so.
        recordError = e as Error;
      }
      wd.stand();
    }
    this.close();
    // Released means the hold lock is free, so that a status or a hold right after it finds nothing
    // held. The watchdog, told to stand down, keeps the lock until it has exited (closing its queue
    // and netlink sockets takes ~10 ms here); stand() kills one that has not gone in 200 ms.
    if (!failure) await wd.ended;
    if (failure)
      throw new ReleaseError(`release failed after ${RELEASE_ATTEMPTS} attempts (${failure.message}), and so did the watchdog's; its sockets are closed`);
    const r: Released = {
      durationMs,
      released: result.released,
      drops: result.drops,
      cause,
      by: 'owner',
      ...(result.othersCut ? { othersCut: result.othersCut } : {}),
      ...(result.othersWaitMs ? { othersWaitMs: result.othersWaitMs } : {}),
    };
    this.resolveDone(r);
    if (recordError) throw new StateError(`released, but the record could not be written: ${recordError.message}`);
    return r;
  }

  private close(): void {
    this.prepared.close();
    this.rt.close();
    this.lock.release();
  }

  private async watchdogReleased(end: Extract<WatchdogEnd, { kind: 'released' }>): Promise<Released> {
    this.letGo = true;
    clearTimeout(this.backup);
    // The hold ended with the watchdog's release: the clean-up below is not part of it.
    const durationMs = this.elapsedMs();
    const steeringLeft = await this.afterWatchdog();
    this.close();
    const r: Released = {
      durationMs,
      released: 0,
      drops: 0,
      cause: { kind: end.cause },
      by: 'watchdog',
      ...(steeringLeft ? { steeringLeft } : {}),
    };
    this.resolveDone(r);
    return r;
  }

  /**
   * Still under our lock (the watchdog's copy of it is closed): what its release does not undo, the
   * backend's steering added for this hold, goes before another hold may start. Returns why it did not
   * (a failure or AFTER_WATCHDOG_MS passed), which leaves a cost, not a hold.
   */
  private async afterWatchdog(): Promise<string | undefined> {
    const active = this.active;
    if (!active.afterWatchdogRelease) return undefined;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<string>((r) => (timer = setTimeout(() => r(`not removed within ${AFTER_WATCHDOG_MS} ms`), AFTER_WATCHDOG_MS)));
    try {
      return await Promise.race([
        active.afterWatchdogRelease().then(
          () => undefined,
          (e: unknown) => (e as Error).message,
        ),
        late,
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  private onWatchdogEnd(end: WatchdogEnd): void {
    if (this.releasing) return; // our own release (or detach) ended it
    if (end.kind === 'released') {
      this.releasing = this.watchdogReleased(end);
      return;
    }
    // Killed, or its own release failed: no dead-man's switch any more. Release now
    // rather than hold with nothing to end the hold if this process dies too.
    void this.release({ kind: 'watchdog-gone' }).catch(() => undefined);
  }
}
