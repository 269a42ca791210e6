/**
 * A packet-level pause for any flow (issue 10, the seed's "bufferize IP packets
 * and release them as needed ... to reproduce painful races"): every packet
 * matching a filter waits, in an NFQUEUE bound by this process or in an sch_plug
 * qdisc (engine.ts), until it lets them go an epoch at a time (`step`: everything
 * held so far), N at a time or drops one (nfqueue), or lets everything go and
 * stops (`release`).
 *
 * Who owns a buffer: the process that called buffer() (for the CLI, the
 * foreground `synhold buffer start`). Not the daemon: a buffer is a debugging
 * session whose natural lifetime is its owner's (Ctrl-C ends it), it needs no
 * setup, and a netfilter queue can only be given verdicts by the socket that
 * bound it, so whoever steps must be whoever bound. Other processes reach the
 * owner over its control socket (control.ts): `synhold buffer step|list|release`.
 *
 * The dead-man's switch is protect's (native/watchdog.c through
 * src/protect/hold/watchdog.ts), started before anything is held, with a
 * duplicate of the engine's socket and of the buffer's lock, and the engine's
 * release encoded in advance (engine-nfqueue.ts, engine-plug.ts). It fires when
 * the owner dies (kill -9 included: its pipe closes), at max-hold whatever the
 * owner does, or on SIGTERM. So a buffer never outlives its owner, and never
 * lasts past max-hold.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { BusyError, NotSetUpError, ReleaseError, SynholdError } from '../model/errors.js';
import { MAX_DURATION_MS } from '../model/config.js';
import { FileLock } from '../protect/lock.js';
import { Watchdog, type WatchdogEnd } from '../protect/hold/watchdog.js';
import { processId } from '../protect/hold/process-id.js';
import { describeFilter, type BufferFilter } from './filter.js';
import { BufferPaths } from './paths.js';
import { planBuffer, type BufferOptions, type BufferPlan } from './plan.js';
import { serveControl, type BufferInfo, type ControlServer } from './control.js';
import type { BufferBackend, BufferEndCause, BufferEngine, BufferHeld, BufferReleased, StepOptions, StepResult } from './engine.js';
import { prepareNfqueue } from './engine-nfqueue.js';
import { preparePlug } from './engine-plug.js';

/** How long past max-hold the owner waits for a stopped watchdog before releasing itself. */
const BACKUP_MS = 300;

export type { BufferOptions } from './plan.js';
export type { BufferBackend, BufferEndCause, BufferHeld, BufferReleased, StepOptions, StepResult } from './engine.js';

/** A buffer this process owns. */
export interface PacketBuffer extends AsyncDisposable {
  readonly queue: number;
  readonly filter: BufferFilter;
  readonly backend: BufferBackend;
  /** Epoch ms when it began holding, and when its watchdog ends it whatever happens. */
  readonly since: number;
  readonly deadline: number;
  readonly watchdogPid: number;
  /** Where `synhold buffer step|list|release` reach it (undefined with control: false). */
  readonly controlSocket: string | undefined;
  /** Resolves once released, whoever released. */
  readonly done: Promise<BufferReleased>;
  /** What is held now: every packet, oldest first (nfqueue), or counts (plug). */
  list(): Promise<BufferHeld>;
  step(o?: StepOptions): Promise<StepResult>;
  release(): Promise<BufferReleased>;
}

/**
 * Starts holding every packet that matches the filter, until release(), max-hold,
 * or this process's death (then its watchdog lets everything go within
 * milliseconds). Bad input throws ConfigError (code ERR_BAD_INPUT) before
 * anything changes; a buffer already on the queue throws ERR_BUSY.
 * CLI equivalent: `synhold buffer start FILTER` (which then serves `synhold buffer step|list|release`).
 */
export async function buffer(opts: BufferOptions): Promise<PacketBuffer> {
  return BufferOwner.start(await planBuffer(opts));
}

class BufferOwner implements PacketBuffer {
  readonly queue: number;
  readonly filter: BufferFilter;
  readonly backend: BufferBackend;
  readonly since = Date.now();
  readonly deadline: number;
  readonly done: Promise<BufferReleased>;
  private resolveDone!: (r: BufferReleased) => void;
  private ops: Promise<unknown> = Promise.resolve();
  private releasing?: Promise<BufferReleased>;
  private server?: ControlServer;
  private readonly backup: NodeJS.Timeout;
  private stepped = 0;
  private dropped = 0;

  private constructor(
    private readonly plan: BufferPlan,
    private readonly lock: FileLock,
    private readonly engine: BufferEngine,
    private readonly wd: Watchdog,
  ) {
    this.queue = plan.queue;
    this.filter = plan.filter;
    this.backend = plan.backend;
    this.deadline = this.since + plan.maxHoldMs;
    this.done = new Promise((r) => (this.resolveDone = r));
    // A stopped watchdog cannot end the buffer at max-hold: then the owner does, a moment later.
    this.backup = setTimeout(() => void this.endWith('max-hold').catch(() => undefined), plan.maxHoldMs + BACKUP_MS);
    this.backup.unref();
    void wd.ended.then((end) => this.onWatchdogEnd(end));
  }

  static async start(plan: BufferPlan): Promise<BufferOwner> {
    const { paths } = plan;
    paths.ensure();
    const lock = FileLock.tryAcquire(paths.lock);
    if (!lock) throw busy(paths);
    let engine: BufferEngine | undefined;
    let wd: Watchdog | undefined;
    try {
      engine = plan.backend === 'plug' ? await preparePlug(plan) : await prepareNfqueue(plan);
      wd = Watchdog.start({
        fallback: engine.fallback,
        deadlineMs: plan.maxHoldMs,
        owner: 'process',
        lockFd: lock.fd,
        recordPath: paths.record,
        journalPath: paths.journal,
      });
      await engine.start();
      const owner = new BufferOwner(plan, lock, engine, wd);
      owner.writeRecord();
      if (plan.control) owner.server = await serveControl(paths.socket, owner);
      return owner;
    } catch (e) {
      await abortStart(plan, lock, engine, wd);
      throw e;
    }
  }

  get watchdogPid(): number {
    return this.wd.pid;
  }

  get controlSocket(): string | undefined {
    return this.plan.control ? this.plan.paths.socket : undefined;
  }

  list(): Promise<BufferHeld> {
    return this.serial(async () => {
      this.assertHolding('list');
      return this.engine.list();
    });
  }

  step(o: StepOptions = {}): Promise<StepResult> {
    return this.serial(async () => {
      this.assertHolding('step');
      const r = await this.engine.step(o);
      this.stepped += r.released;
      this.dropped += r.dropped;
      return r;
    });
  }

  release(): Promise<BufferReleased> {
    return this.endWith('release');
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.release();
  }

  /** For the control socket and the CLI: what this buffer is. */
  describe(): BufferInfo {
    return {
      queue: this.queue,
      backend: this.backend,
      filter: describeFilter(this.filter),
      since: this.since,
      deadline: this.deadline,
      watchdogPid: this.wd.pid,
      ownerPid: process.pid,
    };
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.ops.then(fn, fn);
    this.ops = run.catch(() => undefined);
    return run;
  }

  private assertHolding(op: string): void {
    if (this.releasing) throw new NotSetUpError(`cannot ${op}: the buffer on queue ${this.queue} is released`);
  }

  private endWith(cause: BufferEndCause): Promise<BufferReleased> {
    this.releasing ??= this.serial(() => this.ownerRelease(cause));
    return this.releasing;
  }

  /**
   * Tell the watchdog we release ('B'), let everything go (traffic flows from
   * here), remove the steering, tell it we are done ('X'). If our release
   * fails, the watchdog finishes it with its own copy.
   */
  private async ownerRelease(cause: BufferEndCause): Promise<BufferReleased> {
    if (this.wd.end?.kind === 'released') return this.afterWatchdog(this.wd.end);
    this.wd.beginRelease();
    let released = 0;
    try {
      released = await this.engine.releaseAll();
    } catch (e) {
      this.wd.takeOver();
      await Promise.race([this.wd.ended, sleep(3000, undefined, { ref: false })]);
      // Its deadline came as we began (the queue was already unbound): the buffer ended all the same.
      const end = this.wd.end as WatchdogEnd | undefined; // changed while we awaited
      if (end?.kind === 'released') return this.afterWatchdog(end);
      await this.close();
      throw new ReleaseError(`buffer release failed (${(e as Error).message}); its watchdog released instead`);
    }
    const steeringError = await this.engine.removeSteering().then(
      () => undefined,
      (e: Error) => e,
    );
    this.wd.stand();
    await this.close();
    const r = this.result(released, cause, 'owner');
    this.resolveDone(r);
    if (steeringError) {
      throw new ReleaseError(`released, but removing the steering failed (${steeringError.message}); \`synhold buffer release\` removes it`);
    }
    return r;
  }

  /** The watchdog let go on its own (max-hold, SIGTERM): tidy up after it. */
  private async afterWatchdog(end: Extract<WatchdogEnd, { kind: 'released' }>): Promise<BufferReleased> {
    const released = await this.engine.afterWatchdog();
    await this.close();
    const cause: BufferEndCause = end.detail === 'signal' ? 'signal' : end.detail === 'max-hold' ? 'max-hold' : 'owner-gone';
    const r = this.result(released, cause, 'watchdog');
    this.resolveDone(r);
    return r;
  }

  private onWatchdogEnd(end: WatchdogEnd): void {
    if (this.releasing) return;
    if (end.kind === 'released') {
      this.releasing = this.serial(() => this.afterWatchdog(end));
      return;
    }
    // Killed, or its own release failed: no dead-man's switch any more. Release
    // now rather than hold with nothing to end the buffer if this process dies too.
    void this.endWith('watchdog-gone').catch(() => undefined);
  }

  private result(released: number, cause: BufferEndCause, by: 'owner' | 'watchdog'): BufferReleased {
    return { released, stepped: this.stepped, dropped: this.dropped, durationMs: Date.now() - this.since, cause, by };
  }

  private async close(): Promise<void> {
    clearTimeout(this.backup);
    await this.server?.close();
    this.engine.close();
    this.plan.paths.removeFiles();
    this.lock.release();
  }

  private writeRecord(): void {
    this.plan.paths.writeRecord({
      queue: this.queue,
      backend: this.backend,
      owner: processId(process.pid)!,
      watchdog: this.wd.id,
      filter: this.filter,
      ...(this.plan.steering ? { iptables: this.plan.steering.iptables, families: this.plan.steering.families.map((f) => f.family) } : {}),
      since: this.since,
      deadline: this.deadline,
    });
  }
}

/** Undoes a start that failed part way: nothing may stay held or steered. */
async function abortStart(plan: BufferPlan, lock: FileLock, engine: BufferEngine | undefined, wd: Watchdog | undefined): Promise<void> {
  wd?.beginRelease();
  if (engine) {
    await engine.releaseAll().catch(() => undefined);
    await engine.removeSteering().catch(() => undefined);
  }
  if (wd) {
    wd.stand();
    await wd.ended;
  }
  engine?.close();
  plan.paths.removeFiles();
  lock.release();
}

function busy(paths: BufferPaths): SynholdError {
  const r = paths.readRecord();
  const who = r ? ` (owner pid ${r.owner.pid}, watchdog pid ${r.watchdog.pid})` : '';
  return new BusyError(`a buffer on queue ${paths.queue} is running here${who}; use another --queue-num, or synhold buffer release`);
}

/** The maximum of --max-hold, as for holds. */
export const MAX_BUFFER_HOLD_MS = MAX_DURATION_MS.maxHold;
