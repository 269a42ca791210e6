/**
 * nfnetlink framing (include/uapi/linux/netfilter/nfnetlink.h): every message
 * on NETLINK_NETFILTER starts with struct nfgenmsg, and its nlmsg_type packs
 * the subsystem in the high byte and the subsystem's message in the low byte.
 */
import { defineStruct } from '../netlink/schema.js';

/** struct nfgenmsg { __u8 nfgen_family; __u8 version; __be16 res_id; } */
export const nfgenmsg = defineStruct('nfgenmsg', [
  ['family', 'u8'],
  ['version', 'u8'],
  /** The resource: for nfnetlink_queue, the queue number. */
  ['resId', 'be16'],
] as const);

export const NFNETLINK_V0 = 0;

// Subsystem ids (the high byte of nlmsg_type). Only the ones synhold names.
export const NFNL_SUBSYS_QUEUE = 3;
export const NFNL_SUBSYS_NFTABLES = 10;

/** NLMSG_MIN_TYPE and the next: the batch delimiters carry no subsystem in their type, only in nfgenmsg.res_id. */
export const NFNL_MSG_BATCH_BEGIN = 0x10;
export const NFNL_MSG_BATCH_END = 0x11;

// enum nfproto (include/uapi/linux/netfilter.h): nfgen_family of nf_tables messages.
export const NFPROTO_UNSPEC = 0;
export const NFPROTO_IPV4 = 2;
export const NFPROTO_IPV6 = 10;

// Verdicts (include/uapi/linux/netfilter.h): an NFQUEUE verdict, a base chain's policy.
export const NF_DROP = 0;
export const NF_ACCEPT = 1;

export const AF_UNSPEC = 0;
export const AF_INET = 2;
export const AF_INET6 = 10;

/** nlmsg_type for message `msg` of subsystem `subsys`. */
export function nfnlMsgType(subsys: number, msg: number): number {
  return ((subsys & 0xff) << 8) | (msg & 0xff);
}

export function nfnlSubsysId(type: number): number {
  return (type >> 8) & 0xff;
}

export function nfnlMsgId(type: number): number {
  return type & 0xff;
}
