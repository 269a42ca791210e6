/**
 * The nfqueue engine: iptables rules (steering.ts) send the filter's packets to
 * an NFQUEUE this process binds; each packet is seen (list), and let go by batch
 * verdict (an epoch, or the oldest N) or dropped. Works on kernels without sch_plug.
 *
 * The watchdog's release: the queue's (as NfQueue.unbind() does it: FAIL_OPEN,
 * max length 0, accept everything, unbind; sent on a duplicate of our socket,
 * because verdicts must come from the socket that bound the queue), then per
 * family `iptables -t raw -F synhold-buf-N` and `iptables-restore --noflush` of
 * the file that deletes the jumps and the chain.
 */
import { ConfigError } from '../model/config.js';
import { encodeReleaseRequests, NfQueue } from '../nfqueue/nfnetlink_queue.js';
import { NF_DROP } from '../netfilter/nfnetlink.js';
import type { Fallback } from '../backends/backend.js';
import { HeldTable } from './held.js';
import { flushArgv, installSteering, restoreArgv, writeRuleFiles } from './steering.js';
import { removeAllSteering, removeOwnSteering, type BufferPlan } from './plan.js';
import type { BufferEngine, BufferHeld, StepOptions, StepResult } from './engine.js';

/** Room for a long debugging session's worth of packets; past it the kernel drops (counted in /proc). */
const BUFFER_MAXLEN = 16384;
/** Enough of each packet to read its IP and TCP/UDP headers for `list`. */
const COPY_RANGE = 128;

export async function prepareNfqueue(plan: BufferPlan): Promise<BufferEngine> {
  const { paths, netns } = plan;
  const steering = plan.steering!;
  // Under the buffer's lock: whatever a dead buffer on this queue left is ours to remove.
  await removeAllSteering(plan.queue, steering.iptables, netns);
  writeRuleFiles(steering, paths);
  const held = new HeldTable();
  const q = NfQueue.open({ queue: plan.queue, netns, maxLen: BUFFER_MAXLEN, copyRange: COPY_RANGE, onPacket: (p) => held.add(p) });
  const messages = encodeReleaseRequests(plan.queue, () => q.reserveSeq()).map((bytes) => ({ socket: 0, bytes }));
  const commands: string[][] = [];
  for (const r of steering.families) commands.push(flushArgv(steering, r.family, netns));
  for (const r of steering.families) commands.push(restoreArgv(r.family, steering.iptables, paths.del(r.family), netns));
  const fallback: Fallback = { sockets: [q.fd], messages, commands, relayAcks: (l) => q.onReservedAck(l) };
  return new NfqueueEngine(plan, q, held, fallback);
}

class NfqueueEngine implements BufferEngine {
  readonly backend = 'nfqueue' as const;

  constructor(
    private readonly plan: BufferPlan,
    private readonly q: NfQueue,
    private readonly held: HeldTable,
    readonly fallback: Fallback,
  ) {}

  async start(): Promise<void> {
    await this.q.bindQueue(true);
    await installSteering(this.plan.steering!, this.plan.paths, this.plan.netns);
  }

  async list(): Promise<BufferHeld> {
    await this.q.barrier();
    return { heldPackets: this.held.size, packets: this.held.list() };
  }

  /**
   * The epoch is what the kernel holds when the step begins: the barrier makes
   * sure every packet queued before it is in the table. Releasing is one batch
   * verdict, so the epoch leaves in the order it came and nothing newer goes with it.
   */
  async step(o: StepOptions): Promise<StepResult> {
    if (o.count !== undefined && (!Number.isInteger(o.count) || o.count < 1)) throw new ConfigError(`step count ${String(o.count)} is not a positive integer`);
    await this.q.barrier();
    const n = Math.min(o.count ?? (o.drop ? 1 : this.held.size), this.held.size);
    if (n === 0) return { released: 0, dropped: 0, ids: [], held: 0 };
    const ids = this.held.take(n);
    if (o.drop) {
      for (const id of ids) await this.q.verdict(id, NF_DROP);
      return { released: 0, dropped: ids.length, ids, held: this.held.size };
    }
    const released = await this.q.acceptThrough(ids[ids.length - 1]!, ids.length);
    return { released, dropped: 0, ids, held: this.held.size };
  }

  async releaseAll(): Promise<number> {
    const { accepted } = await this.q.acceptAll();
    await this.q.unbind();
    this.held.clear();
    return accepted;
  }

  removeSteering(): Promise<void> {
    return removeOwnSteering(this.plan);
  }

  async afterWatchdog(): Promise<number> {
    const n = this.held.clear();
    await removeAllSteering(this.plan.queue, this.plan.steering!.iptables, this.plan.netns).catch(() => undefined);
    return n;
  }

  close(): void {
    this.q.close();
  }
}
