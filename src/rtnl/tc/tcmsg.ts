/**
 * The message body shared by qdiscs, classes and filters: struct tcmsg and the
 * TCA_* attributes (include/uapi/linux/rtnetlink.h), plus the statistics the
 * kernel attaches to dumps (include/uapi/linux/gen_stats.h).
 */
import { defineAttributes, defineStruct, type AttrValues } from '../../netlink/schema.js';

export const RTM_NEWQDISC = 36;
export const RTM_DELQDISC = 37;
export const RTM_GETQDISC = 38;
export const RTM_NEWTFILTER = 44;
export const RTM_DELTFILTER = 45;
export const RTM_GETTFILTER = 46;

export const AF_UNSPEC = 0;

/** struct tcmsg */
export const tcmsg = defineStruct('tcmsg', [
  ['family', 'u8'],
  ['pad1', 'u8'],
  ['pad2', 'u16'],
  ['ifindex', 's32'],
  ['handle', 'u32'],
  ['parent', 'u32'],
  /** Filters: priority in the upper 16 bits, protocol (network order) in the lower. */
  ['info', 'u32'],
] as const);

/** struct gnet_stats_basic (the kernel pads it to 16 bytes) */
export const gnetStatsBasic = defineStruct('gnet_stats_basic', [
  ['bytes', 'u64'],
  ['packets', 'u32'],
] as const);

/** struct gnet_stats_queue */
export const gnetStatsQueue = defineStruct('gnet_stats_queue', [
  ['qlen', 'u32'],
  ['backlog', 'u32'],
  ['drops', 'u32'],
  ['requeues', 'u32'],
  ['overlimits', 'u32'],
] as const);

/** enum TCA_STATS_* nested in TCA_STATS2 */
export const tcaStats2 = defineAttributes('tca_stats', {
  basic: { type: 1, kind: 'struct', struct: gnetStatsBasic },
  rateEst: { type: 2, kind: 'binary' },
  queue: { type: 3, kind: 'struct', struct: gnetStatsQueue },
  app: { type: 4, kind: 'binary' },
  rateEst64: { type: 5, kind: 'binary' },
  pad: { type: 6, kind: 'binary' },
  basicHw: { type: 7, kind: 'struct', struct: gnetStatsBasic },
  pkt64: { type: 8, kind: 'u64' },
});

/** enum TCA_* (TCA_OPTIONS is kind-specific: decoded by the kind's module) */
export const tcaAttrs = defineAttributes('tca', {
  kind: { type: 1, kind: 'string' },
  options: { type: 2, kind: 'binary' },
  stats: { type: 3, kind: 'binary' },
  xstats: { type: 4, kind: 'binary' },
  rate: { type: 5, kind: 'binary' },
  fcnt: { type: 6, kind: 'binary' },
  stats2: { type: 7, kind: 'nested', set: () => tcaStats2 },
  stab: { type: 8, kind: 'binary' },
  pad: { type: 9, kind: 'binary' },
  dumpInvisible: { type: 10, kind: 'flag' },
  chain: { type: 11, kind: 'u32' },
  hwOffload: { type: 12, kind: 'u8' },
  ingressBlock: { type: 13, kind: 'u32' },
  egressBlock: { type: 14, kind: 'u32' },
  dumpFlags: { type: 15, kind: 'binary' },
  extWarnMsg: { type: 16, kind: 'string' },
});

export type TcaValues = AttrValues<typeof tcaAttrs.spec>;

/** What synhold reports of a qdisc's or filter's counters. */
export interface TcStats {
  packets: number;
  bytes: bigint;
  /** Packets queued right now (for a plug: held). */
  qlen: number;
  /** Bytes queued right now. */
  backlog: number;
  drops: number;
  requeues: number;
  overlimits: number;
}

export function statsFrom(v: TcaValues): TcStats | undefined {
  const s = v.stats2;
  if (!s) return undefined;
  return {
    packets: s.basic?.packets ?? 0,
    bytes: s.basic?.bytes ?? 0n,
    qlen: s.queue?.qlen ?? 0,
    backlog: s.queue?.backlog ?? 0,
    drops: s.queue?.drops ?? 0,
    requeues: s.queue?.requeues ?? 0,
    overlimits: s.queue?.overlimits ?? 0,
  };
}

export const ETH_P_ALL = 0x0003;
export const ETH_P_IP = 0x0800;
export const ETH_P_IPV6 = 0x86dd;

/** tcm_info for a filter: TC_H_MAKE(prio << 16, htons(protocol)). */
export function filterInfo(prio: number, protocol: number): number {
  const be = ((protocol & 0xff) << 8) | ((protocol >> 8) & 0xff);
  return (((prio & 0xffff) << 16) | be) >>> 0;
}

export function infoPrio(info: number): number {
  return (info >>> 16) & 0xffff;
}

export function infoProtocol(info: number): number {
  const be = info & 0xffff;
  return ((be & 0xff) << 8) | ((be >> 8) & 0xff);
}
