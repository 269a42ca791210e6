/**
 * sch_prio (net/sched/sch_prio.c): N bands served in strict priority; the
 * priomap sends each skb->priority (0..15) to a band. The seed's topology adds a
 * fourth band that no priority maps to, reachable only through a filter.
 */
import { EncodeError } from '../../netlink/errors.js';
import { defineStruct, encodeAttr } from '../../netlink/schema.js';
import type { TcKind } from './kind.js';

export const TC_PRIO_MAX = 15;

/** struct tc_prio_qopt (include/uapi/linux/pkt_sched.h) */
export const tcPrioQopt = defineStruct('tc_prio_qopt', [
  ['bands', 's32'],
  ['priomap', 'bytes', TC_PRIO_MAX + 1],
] as const);

/** The kernel's default (sch_generic.c prio2band), the map pfifo_fast uses too. */
export const DEFAULT_PRIOMAP: readonly number[] = [1, 2, 2, 2, 1, 2, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];

export interface PrioOptions {
  bands: number;
  priomap?: readonly number[];
}

export const schPrio: TcKind<PrioOptions> = {
  kind: 'prio',
  encodeOptions(o) {
    const map = o.priomap ?? DEFAULT_PRIOMAP;
    if (o.bands < 2 || o.bands > 16) throw new EncodeError('tc_prio_qopt', `bands must be 2..16, got ${o.bands}`);
    if (map.length !== TC_PRIO_MAX + 1 || map.some((b) => !Number.isInteger(b) || b < 0 || b >= o.bands)) {
      throw new EncodeError('tc_prio_qopt', `priomap needs ${TC_PRIO_MAX + 1} bands each below ${o.bands}`);
    }
    // The struct, then an empty nested TCA_OPTIONS (TCA_PRIO_MQ would go there):
    // what iproute2's addattr_nest_compat() sends; sch_prio parses attributes after the struct.
    return Buffer.concat([tcPrioQopt.encode({ bands: o.bands, priomap: Buffer.from(map) }), encodeAttr(2, Buffer.alloc(0))]);
  },
  decodeOptions(payload) {
    const v = tcPrioQopt.decode(payload);
    return { bands: v.bands, priomap: [...v.priomap] };
  },
};
