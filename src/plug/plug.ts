/**
 * Plug control: HAProxy's contrib/plug_qdisc.c (attach, buffer, release) in
 * TypeScript, plus what it lacks: release of one epoch, the byte limit,
 * deletion and statistics. One netlink request per operation, in-process.
 */
import type { Rtnl } from '../rtnl/rtnl.js';
import { addQdisc, changeQdisc, deleteQdisc, findQdisc, type QdiscRef } from '../rtnl/tc/qdisc.js';
import type { PlugAction } from '../rtnl/tc/sch_plug.js';
import type { TcStats } from '../rtnl/tc/tcmsg.js';
import { HandleClashError, NoPlugError } from '../model/errors.js';
import { DEFAULT_PLUG_LIMIT } from '../model/config.js';

/** Where a plug lives: a device, its parent (root or a class such as 1:4) and its handle. */
export interface PlugRef extends QdiscRef {
  handle: number;
}

export interface PlugStats {
  /** Packets held right now. */
  heldPackets: number;
  /** Bytes held right now (counted against the limit). */
  heldBytes: number;
  /** Packets dropped because the limit was reached. */
  drops: number;
  /** Packets that went through since creation. */
  packets: number;
  bytes: bigint;
}

export function plugStatsFrom(s: TcStats | undefined): PlugStats {
  return {
    heldPackets: s?.qlen ?? 0,
    heldBytes: s?.backlog ?? 0,
    drops: s?.drops ?? 0,
    packets: s?.packets ?? 0,
    bytes: s?.bytes ?? 0n,
  };
}

/**
 * One sch_plug qdisc, controlled in-process: attach, buffer, releaseOne,
 * releaseIndefinite, setLimit, stats, delete (HAProxy's contrib/plug_qdisc.c and
 * more). Needs a kernel with sch_plug. Each method names its tc equivalent;
 * the class as a whole is `tc qdisc add|change|del dev DEV parent P handle H plug ...`.
 */
export class Plug {
  constructor(
    readonly rt: Rtnl,
    readonly ref: PlugRef,
  ) {}

  private async change(action: PlugAction, limit?: number): Promise<void> {
    await changeQdisc(this.rt, { ...this.ref, kind: 'plug', options: { action, limit } });
  }

  /**
   * Creates the plug if absent, then releases it at once (a new plug starts
   * plugged), like plug_qdisc_attach(). An existing plug is left as it is,
   * except for the limit. Returns whether it was created.
   * Equivalent to: `tc qdisc add dev DEV parent P handle H plug limit L; tc qdisc change ... plug release_indefinite`.
   */
  async attach(limit = DEFAULT_PLUG_LIMIT): Promise<boolean> {
    const existing = await findQdisc(this.rt, this.ref.dev, this.ref.handle);
    if (existing) {
      if (existing.kind !== 'plug') {
        throw new HandleClashError(`dev ${this.ref.dev} already has a ${existing.kind} qdisc with handle ${this.ref.handle.toString(16)}:`);
      }
      await this.setLimit(limit);
      return false;
    }
    await addQdisc(this.rt, { ...this.ref, kind: 'plug', options: { action: 'limit', limit } });
    try {
      await this.releaseIndefinite();
    } catch (e) {
      // Never leave a freshly created (hence plugged) qdisc behind.
      await deleteQdisc(this.rt, this.ref).catch(() => undefined);
      throw e;
    }
    return true;
  }

  /** Starts holding packets. Equivalent to: `tc qdisc change dev DEV parent P handle H plug block`. */
  buffer(): Promise<void> {
    return this.change('buffer');
  }

  /** Releases what was held before the last buffer() and keeps holding the rest. Equivalent to: `... plug release_one`. */
  releaseOne(): Promise<void> {
    return this.change('release_one');
  }

  /** Releases everything and stops holding. Equivalent to: `... plug release_indefinite`. */
  releaseIndefinite(): Promise<void> {
    return this.change('release_indefinite');
  }

  /** Sets the byte limit. Equivalent to: `tc qdisc change dev DEV parent P handle H plug limit BYTES`. */
  setLimit(bytes: number): Promise<void> {
    return this.change('limit', bytes);
  }

  /** Deletes the plug; the kernel drops what it holds, so release first. Equivalent to: `tc qdisc del dev DEV parent P handle H`. */
  delete(): Promise<void> {
    return deleteQdisc(this.rt, { ...this.ref, kind: 'plug' });
  }

  /** Held packets and bytes and drops, from TCA_STATS2. Equivalent to: `tc -s qdisc show dev DEV`. */
  async stats(): Promise<PlugStats> {
    const q = await findQdisc(this.rt, this.ref.dev, this.ref.handle);
    if (!q || q.kind !== 'plug') {
      throw new NoPlugError(`no plug qdisc with handle ${this.ref.handle.toString(16)}: on dev ${this.ref.dev}`);
    }
    return plugStatsFrom(q.stats);
  }
}
