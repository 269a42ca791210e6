/** pfifo and bfifo (net/sched/sch_fifo.c): a plain FIFO limited in packets or bytes. */
import { defineStruct } from '../../netlink/schema.js';
import type { TcKind } from './kind.js';

/** struct tc_fifo_qopt (include/uapi/linux/pkt_sched.h) */
export const tcFifoQopt = defineStruct('tc_fifo_qopt', [['limit', 'u32']] as const);

export interface FifoOptions {
  /** Packets for pfifo, bytes for bfifo; omitted: the device's txqueuelen. */
  limit?: number;
}

function fifo(kind: 'pfifo' | 'bfifo'): TcKind<FifoOptions> {
  return {
    kind,
    encodeOptions: (o) => (o.limit === undefined ? undefined : tcFifoQopt.encode({ limit: o.limit })),
    decodeOptions: (payload) => tcFifoQopt.decode(payload),
  };
}

export const schPfifo = fifo('pfifo');
export const schBfifo = fifo('bfifo');
