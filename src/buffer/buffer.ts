/**
 * A packet-level pause for any flow (issue 10, the seed's "bufferize IP packets
 * and release them as needed ... to reproduce painful races"): every packet
 * matching a filter waits in an NFQUEUE bound by this process, which lets them
 * go an epoch at a time (`step`: everything held so far), N at a time, drops
 * one, or lets everything go and stops (`release`).
 *
 * Who owns a buffer: the process that called buffer() (for the CLI, the
 * foreground `synhold buffer start`). Not the daemon: a buffer is a debugging
 * session whose natural lifetime is its owner's (Ctrl-C ends it), it needs no
 * setup, and a netfilter queue can only be given verdicts by the socket that
 * bound it, so whoever steps must be whoever bound. Other processes reach the
 * owner over its control socket (control.ts): `synhold buffer step|list|release`.
 *
 * The dead-man's switch is protect's (native/watchdog.c through
 * src/protect/hold/watchdog.ts), started before the queue is bound, with a
 * duplicate of the queue's socket and the buffer's lock, and the release encoded
 * in advance: FAIL_OPEN, max length 0, accept everything, unbind (what
 * NfQueue.unbind() does), then two commands per IP family: flush the buffer's
 * chain, and iptables-restore the file that deletes its rules (steering.ts). It
 * fires when the owner dies (kill -9 included: its pipe closes), at max-hold
 * whatever the owner does, or on SIGTERM. So a buffer never outlives its owner,
 * and never lasts past max-hold.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { SynholdError } from '../model/errors.js';
import { ConfigError, MAX_DURATION_MS } from '../model/config.js';
import { encodeReleaseRequests, NfQueue } from '../nfqueue/nfnetlink_queue.js';
import { NF_DROP } from '../netfilter/nfnetlink.js';
import type { Fallback } from '../backends/backend.js';
import { FileLock } from '../protect/lock.js';
import { Watchdog, type WatchdogEnd } from '../protect/hold/watchdog.js';
import { processId } from '../protect/hold/process-id.js';
import { describeFilter, type BufferFilter } from './filter.js';
import { HeldTable, type HeldPacket } from './held.js';
import { BufferPaths } from './paths.js';
import { flushArgv, installSteering, restoreArgv, writeRuleFiles } from './steering.js';
import { planBuffer, removeAllSteering, removeOwnSteering, type BufferOptions, type BufferPlan } from './plan.js';
import { serveControl, type ControlServer } from './control.js';

/** Room for a long debugging session's worth of packets; past it the kernel drops (counted in /proc). */
const BUFFER_MAXLEN = 16384;
/** Enough of each packet to read its IP and TCP/UDP headers for `list`. */
const COPY_RANGE = 128;
/** How long past max-hold the owner waits for a stopped watchdog before releasing itself. */
const BACKUP_MS = 300;

export interface StepOptions {
  /** Release (or drop) only the oldest N held packets (default: the whole epoch; with drop, 1). */
  count?: number;
  /** Drop instead of releasing. */
  drop?: boolean;
}

export interface StepResult {
  released: number;
  dropped: number;
  /** The kernel ids of the packets let go (or dropped), oldest first. */
  ids: number[];
  /** Packets still held after the step. */
  held: number;
}

export type BufferEndCause = 'release' | 'max-hold' | 'signal' | 'owner-gone' | 'watchdog-gone';

export interface BufferReleased {
  /** Packets let go at the end (not counting earlier steps). */
  released: number;
  /** Over the buffer's life: packets let go by steps, and dropped by steps. */
  stepped: number;
  dropped: number;
  durationMs: number;
  cause: BufferEndCause;
  /** Who let go: this process, or the watchdog on its own (max-hold, SIGTERM). */
  by: 'owner' | 'watchdog';
}

/** A buffer this process owns. */
export interface PacketBuffer extends AsyncDisposable {
  readonly queue: number;
  readonly filter: BufferFilter;
  /** Epoch ms when it began holding, and when its watchdog ends it whatever happens. */
  readonly since: number;
  readonly deadline: number;
  readonly watchdogPid: number;
  /** Where `synhold buffer step|list|release` reach it (undefined with control: false). */
  readonly controlSocket: string | undefined;
  /** Resolves once released, whoever released. */
  readonly done: Promise<BufferReleased>;
  /** What is held now, oldest first. */
  list(): Promise<HeldPacket[]>;
  step(o?: StepOptions): Promise<StepResult>;
  release(): Promise<BufferReleased>;
}

export type { BufferOptions } from './plan.js';

/**
 * Starts holding every packet that matches the filter, until release(), max-hold,
 * or this process's death (then its watchdog lets everything go within
 * milliseconds). Bad input throws ConfigError (code ERR_BAD_INPUT) before
 * anything changes; a buffer already on the queue throws ERR_BUSY.
 */
export async function buffer(opts: BufferOptions): Promise<PacketBuffer> {
  return BufferOwner.start(await planBuffer(opts));
}

class BufferOwner implements PacketBuffer {
  readonly queue: number;
  readonly filter: BufferFilter;
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
    private readonly q: NfQueue,
    private readonly wd: Watchdog,
    private readonly held: HeldTable,
  ) {
    this.queue = plan.queue;
    this.filter = plan.filter;
    this.deadline = this.since + plan.maxHoldMs;
    this.done = new Promise((r) => (this.resolveDone = r));
    // A stopped watchdog cannot end the buffer at max-hold: then the owner does, a moment later.
    this.backup = setTimeout(() => void this.endWith('max-hold').catch(() => undefined), plan.maxHoldMs + BACKUP_MS);
    this.backup.unref();
    void wd.ended.then((end) => this.onWatchdogEnd(end));
  }

  static async start(plan: BufferPlan): Promise<BufferOwner> {
    const { paths, netns } = plan;
    paths.ensure();
    const lock = FileLock.tryAcquire(paths.lock);
    if (!lock) throw busy(paths);
    let q: NfQueue | undefined;
    let wd: Watchdog | undefined;
    try {
      // Under the lock: whatever a dead buffer on this queue left is ours to remove.
      await removeAllSteering(plan.queue, plan.steering.iptables, netns);
      writeRuleFiles(plan.steering, paths);
      const held = new HeldTable();
      q = NfQueue.open({ queue: plan.queue, netns, maxLen: BUFFER_MAXLEN, copyRange: COPY_RANGE, onPacket: (p) => held.add(p) });
      wd = await Watchdog.start({
        fallback: fallbackFor(plan, q),
        deadlineMs: plan.maxHoldMs,
        owner: 'process',
        lockFd: lock.fd,
        recordPath: paths.record,
        journalPath: paths.journal,
      });
      await q.bindQueue(true);
      await installSteering(plan.steering, paths, netns);
      const owner = new BufferOwner(plan, lock, q, wd, held);
      owner.writeRecord();
      if (plan.control) owner.server = await serveControl(paths.socket, owner);
      return owner;
    } catch (e) {
      await abortStart(plan, lock, q, wd);
      throw e;
    }
  }

  get watchdogPid(): number {
    return this.wd.pid;
  }

  get controlSocket(): string | undefined {
    return this.plan.control ? this.plan.paths.socket : undefined;
  }

  list(): Promise<HeldPacket[]> {
    return this.serial(async () => {
      this.assertHolding('list');
      await this.q.barrier();
      return this.held.list();
    });
  }

  step(o: StepOptions = {}): Promise<StepResult> {
    if (o.count !== undefined && (!Number.isInteger(o.count) || o.count < 1)) {
      return Promise.reject(new ConfigError(`step count ${String(o.count)} is not a positive integer`));
    }
    return this.serial(() => this.doStep(o));
  }

  release(): Promise<BufferReleased> {
    return this.endWith('release');
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.release();
  }

  /** For the control socket and the CLI: what this buffer is. */
  describe(): { queue: number; filter: string; since: number; deadline: number; watchdogPid: number; ownerPid: number } {
    return {
      queue: this.queue,
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
    if (this.releasing) throw new SynholdError('ERR_NOT_SET_UP', `cannot ${op}: the buffer on queue ${this.queue} is released`);
  }

  /**
   * The epoch is what the kernel holds when the step begins: the barrier makes
   * sure every packet queued before it is in the table. Releasing is one batch
   * verdict, so the epoch leaves in the order it came and nothing newer goes with it.
   */
  private async doStep(o: StepOptions): Promise<StepResult> {
    this.assertHolding('step');
    await this.q.barrier();
    const n = Math.min(o.count ?? (o.drop ? 1 : this.held.size), this.held.size);
    if (n === 0) return { released: 0, dropped: 0, ids: [], held: 0 };
    const ids = this.held.take(n);
    if (o.drop) {
      for (const id of ids) await this.q.verdict(id, NF_DROP);
      this.dropped += ids.length;
      return { released: 0, dropped: ids.length, ids, held: this.held.size };
    }
    const released = await this.q.acceptThrough(ids[ids.length - 1]!, ids.length);
    this.stepped += released;
    return { released, dropped: 0, ids, held: this.held.size };
  }

  private endWith(cause: BufferEndCause): Promise<BufferReleased> {
    this.releasing ??= this.serial(() => this.ownerRelease(cause));
    return this.releasing;
  }

  /**
   * Tell the watchdog we release ('B'), let everything go and unbind (traffic
   * flows from here: --queue-bypass), remove the rules, tell it we are done
   * ('X'). If our release fails, the watchdog finishes it with its own copy.
   */
  private async ownerRelease(cause: BufferEndCause): Promise<BufferReleased> {
    if (this.wd.end?.kind === 'released') return this.afterWatchdog(this.wd.end);
    this.wd.beginRelease();
    let released = 0;
    try {
      released = (await this.q.acceptAll()).accepted;
      await this.q.unbind();
    } catch (e) {
      this.wd.takeOver();
      await Promise.race([this.wd.ended, sleep(3000, undefined, { ref: false })]);
      await this.close();
      throw new SynholdError('ERR_RELEASE', `buffer release failed (${(e as Error).message}); its watchdog released instead`);
    }
    this.held.clear();
    const rulesError = await removeOwnSteering(this.plan).then(
      () => undefined,
      (e: Error) => e,
    );
    this.wd.stand();
    await this.close();
    const r = this.result(released, cause, 'owner');
    this.resolveDone(r);
    if (rulesError) {
      throw new SynholdError('ERR_RELEASE', `released, but removing the rules failed (${rulesError.message}); \`synhold buffer release\` removes them`);
    }
    return r;
  }

  /** The watchdog let go on its own (max-hold, SIGTERM): its queue is unbound; tidy up after it. */
  private async afterWatchdog(end: Extract<WatchdogEnd, { kind: 'released' }>): Promise<BufferReleased> {
    const released = this.held.clear();
    await removeAllSteering(this.queue, this.plan.steering.iptables, this.plan.netns).catch(() => undefined);
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
    this.q.close();
    this.plan.paths.removeFiles();
    this.lock.release();
  }

  private writeRecord(): void {
    this.plan.paths.writeRecord({
      queue: this.queue,
      owner: processId(process.pid)!,
      watchdog: this.wd.id,
      filter: this.filter,
      iptables: this.plan.steering.iptables,
      families: this.plan.steering.families.map((f) => f.family),
      since: this.since,
      deadline: this.deadline,
    });
  }
}

/**
 * The watchdog's release: the queue's (as NfQueue.unbind() does it, on a
 * duplicate of our socket: verdicts must come from the socket that bound the
 * queue), then the rules' (flush the chain, then delete it and the jumps).
 */
function fallbackFor(plan: BufferPlan, q: NfQueue): Fallback {
  const messages = encodeReleaseRequests(plan.queue, () => q.reserveSeq()).map((bytes) => ({ socket: 0, bytes }));
  const commands: string[][] = [];
  for (const r of plan.steering.families) commands.push(flushArgv(plan.steering, r.family, plan.netns));
  for (const r of plan.steering.families) commands.push(restoreArgv(r.family, plan.steering.iptables, plan.paths.del(r.family), plan.netns));
  return { sockets: [q.fd], messages, commands };
}

/** Undoes a start that failed part way: nothing may stay held or steered. */
async function abortStart(plan: BufferPlan, lock: FileLock, q: NfQueue | undefined, wd: Watchdog | undefined): Promise<void> {
  wd?.beginRelease();
  await q?.unbind().catch(() => undefined);
  await removeAllSteering(plan.queue, plan.steering.iptables, plan.netns).catch(() => undefined);
  if (wd) {
    wd.stand();
    await wd.ended;
  }
  q?.close();
  plan.paths.removeFiles();
  lock.release();
}

function busy(paths: BufferPaths): SynholdError {
  const r = paths.readRecord();
  const who = r ? ` (owner pid ${r.owner.pid}, watchdog pid ${r.watchdog.pid})` : '';
  return new SynholdError('ERR_BUSY', `a buffer on queue ${paths.queue} is running here${who}; use another --queue-num, or synhold buffer release`);
}

/** The maximum of --max-hold, as for holds. */
export const MAX_BUFFER_HOLD_MS = MAX_DURATION_MS.maxHold;
