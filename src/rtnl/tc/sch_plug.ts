/**
 * sch_plug (net/sched/sch_plug.c): a qdisc that queues packets until told to
 * let them go. synhold's whole idea rests on it.
 *
 * Kernel facts that shape this module (KERNEL.md):
 * - A new plug qdisc starts plugged: attach() releases it right after creating it.
 * - RELEASE_ONE releases the previous buffering epoch (all that was queued before
 *   the last BUFFER), not one packet.
 * - `limit` is in bytes and is read only with TCQ_PLUG_LIMIT (and at creation);
 *   past it packets are dropped, so a held SYN past the limit costs a retransmit.
 * - sch_plug has no dump op: the kernel cannot say whether it is plugged. Only
 *   TCA_STATS2 (qlen, backlog, drops) tells what it holds.
 * - The plug outlives the process that set it; deleting it drops what it holds.
 */
import { EncodeError } from '../../netlink/errors.js';
import { defineStruct } from '../../netlink/schema.js';
import type { TcKind } from './kind.js';

/** struct tc_plug_qopt (include/uapi/linux/pkt_sched.h) */
export const tcPlugQopt = defineStruct('tc_plug_qopt', [
  ['action', 's32'],
  ['limit', 'u32'],
] as const);

export const TCQ_PLUG_BUFFER = 0;
export const TCQ_PLUG_RELEASE_ONE = 1;
export const TCQ_PLUG_RELEASE_INDEFINITE = 2;
export const TCQ_PLUG_LIMIT = 3;

export type PlugAction = 'buffer' | 'release_one' | 'release_indefinite' | 'limit';

const ACTIONS: Record<PlugAction, number> = {
  buffer: TCQ_PLUG_BUFFER,
  release_one: TCQ_PLUG_RELEASE_ONE,
  release_indefinite: TCQ_PLUG_RELEASE_INDEFINITE,
  limit: TCQ_PLUG_LIMIT,
};

export interface PlugOptions {
  action: PlugAction;
  /** Bytes; meaningful with action `limit` and at creation. */
  limit?: number;
}

export const schPlug: TcKind<PlugOptions> = {
  kind: 'plug',
  encodeOptions(o) {
    const action = ACTIONS[o.action];
    // An unknown action must never turn into 0 (BUFFER) silently: that would plug traffic.
    if (action === undefined) throw new EncodeError('tc_plug_qopt', `unknown plug action "${String(o.action)}"`);
    return tcPlugQopt.encode({ action, limit: o.limit ?? 0 });
  },
  decodeOptions(payload) {
    const v = tcPlugQopt.decode(payload);
    const name = (Object.keys(ACTIONS) as PlugAction[]).find((k) => ACTIONS[k] === v.action);
    return { action: name ?? v.action, limit: v.limit };
  },
};
