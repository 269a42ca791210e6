/**
 * One hold, from lock to release: what a holder process (holder.ts) and the
 * daemon (daemon.ts) both do for each hold they own.
 *
 *   start()    takes the hold lock (waiting up to lockWaitMs), holds with the
 *              configured backend, writes hold.json, arms the max-hold timer
 *   release()  lets everything go (retried: a release must not be lost to one
 *              failed request), records the hold in stats.json, drops the lock;
 *              the first reason wins, later calls get the same result
 */
import { backendFor } from '../backends/index.js';
import type { ActiveHold, BackendContext } from '../backends/backend.js';
import { SynholdError } from '../model/errors.js';
import { Rtnl } from '../rtnl/rtnl.js';
import { FileLock } from './lock.js';
import { StateStore } from './state.js';
import type { BackendName } from '../model/config.js';

export interface HoldArgs {
  netns?: string;
  maxHoldMs: number;
  lockWaitMs: number;
  /** The process that owns the hold on the kernel's side (holder or daemon). */
  holderPid: number;
  /** The process the hold is for (protect), when known. */
  ownerPid?: number;
  via: 'holder' | 'daemon';
}

export interface Held {
  type: 'held';
  since: number;
  deadline: number;
  backend: BackendName;
}

export interface Released {
  type: 'released';
  durationMs: number;
  released: number;
  drops: number;
  reason: string;
}

/** Release reasons that mean a watchdog did the job (for the stats and metrics). */
export const WATCHDOG_REASONS = new Set(['owner gone', 'max-hold reached']);

export class HoldSession {
  readonly held: Held;
  /** Resolves once released, whatever the reason (including max-hold). */
  readonly done: Promise<Released>;
  private releasing?: Promise<Released>;
  private resolveDone!: (r: Released) => void;
  private readonly t0 = process.hrtime.bigint();
  private readonly maxTimer: NodeJS.Timeout;

  private constructor(
    private readonly store: StateStore,
    private readonly lock: FileLock,
    private readonly ctx: BackendContext,
    private readonly hold: ActiveHold,
    held: Held,
    maxHoldMs: number,
  ) {
    this.held = held;
    this.done = new Promise((r) => (this.resolveDone = r));
    this.maxTimer = setTimeout(() => void this.release('max-hold reached').catch(() => undefined), maxHoldMs);
  }

  static async start(args: HoldArgs): Promise<HoldSession> {
    const store = StateStore.for(args.netns);
    store.ensure();
    const setup = store.readSetup();
    if (!setup) throw new SynholdError('ERR_NOT_SET_UP', 'synhold is not set up here; run `synhold setup --port P` first');
    const lock = await FileLock.acquire(store.holdLockPath, args.lockWaitMs);
    if (!lock) {
      const h = store.readHold();
      throw new SynholdError('ERR_BUSY', `another hold is in progress${h ? ` (holder pid ${h.holderPid})` : ''} and did not end within ${args.lockWaitMs} ms`);
    }
    const ctx: BackendContext = args.netns ? { rt: Rtnl.open({ netns: args.netns }), netns: args.netns } : { rt: Rtnl.open() };
    let hold: ActiveHold;
    try {
      hold = await backendFor(setup.backend).hold(setup.backendState, ctx);
    } catch (e) {
      ctx.rt.close();
      lock.release();
      throw e;
    }
    const since = Date.now();
    const held: Held = { type: 'held', since, deadline: since + args.maxHoldMs, backend: setup.backend };
    store.writeHold({
      holderPid: args.holderPid,
      ownerPid: args.ownerPid,
      via: args.via,
      backend: setup.backend,
      since,
      deadline: held.deadline,
    });
    return new HoldSession(store, lock, ctx, hold, held, args.maxHoldMs);
  }

  /** Releases (once); concurrent and later calls share the first call's outcome. */
  release(reason: string): Promise<Released> {
    this.releasing ??= this.doRelease(reason);
    return this.releasing;
  }

  private async doRelease(reason: string): Promise<Released> {
    clearTimeout(this.maxTimer);
    let result = { released: 0, drops: 0 };
    let failure: Error | undefined;
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        result = await this.hold.release();
        failure = undefined;
        break;
      } catch (e) {
        failure = e as Error;
      }
    }
    const durationMs = Number(process.hrtime.bigint() - this.t0) / 1e6;
    this.store.removeHold();
    this.store.recordHold(
      { startedAt: new Date(this.held.since).toISOString(), durationMs, released: result.released, drops: result.drops, reason },
      WATCHDOG_REASONS.has(reason),
    );
    this.ctx.rt.close();
    this.lock.release();
    if (failure) throw new SynholdError('ERR_RELEASE', `release failed after 5 attempts: ${failure.message}`);
    const r: Released = { type: 'released', durationMs, released: result.released, drops: result.drops, reason };
    this.resolveDone(r);
    return r;
  }
}
