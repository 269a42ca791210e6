/**
 * Netlink framing (include/uapi/linux/netlink.h): struct nlmsghdr, the flags,
 * the control message types and struct nlmsgerr with its extended-ack TLVs.
 */
import { DecodeError, EncodeError } from './errors.js';
import { defineAttributes, defineStruct } from './schema.js';

export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLMSG_OVERRUN = 4;

export const NLM_F_REQUEST = 0x01;
export const NLM_F_MULTI = 0x02;
export const NLM_F_ACK = 0x04;
export const NLM_F_ECHO = 0x08;
export const NLM_F_DUMP_INTR = 0x10;
export const NLM_F_DUMP_FILTERED = 0x20;
// Modifiers to GET requests.
export const NLM_F_ROOT = 0x100;
export const NLM_F_MATCH = 0x200;
export const NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH;
// Modifiers to NEW requests.
export const NLM_F_REPLACE = 0x100;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
export const NLM_F_APPEND = 0x800;
// Flags on an ACK / error.
export const NLM_F_CAPPED = 0x100;
export const NLM_F_ACK_TLVS = 0x200;

export const NLMSG_HDRLEN = 16;

/** struct nlmsghdr */
export const nlmsghdr = defineStruct('nlmsghdr', [
  ['len', 'u32'],
  ['type', 'u16'],
  ['flags', 'u16'],
  ['seq', 'u32'],
  ['pid', 'u32'],
] as const);

/** enum nlmsgerr_attrs: the extended ACK carried after struct nlmsgerr. */
export const nlmsgerrAttrs = defineAttributes('nlmsgerr_attrs', {
  msg: { type: 1, kind: 'string' },
  offset: { type: 2, kind: 'u32' },
  cookie: { type: 3, kind: 'binary' },
  policy: { type: 4, kind: 'binary' },
  missType: { type: 5, kind: 'u32' },
  missNest: { type: 6, kind: 'u32' },
});

export interface NetlinkMessage {
  type: number;
  flags: number;
  seq: number;
  pid: number;
  /** Everything after the 16-byte header, without trailing alignment padding. */
  payload: Buffer;
}

export function align4(n: number): number {
  return (n + 3) & ~3;
}

export function encodeMessage(m: Omit<NetlinkMessage, 'pid'> & { pid?: number }): Buffer {
  const len = NLMSG_HDRLEN + m.payload.length;
  if (len > 0xffffffff) throw new EncodeError('nlmsghdr', 'message too large');
  const out = Buffer.alloc(align4(len));
  nlmsghdr.encodeInto(out, 0, { len, type: m.type, flags: m.flags, seq: m.seq >>> 0, pid: m.pid ?? 0 });
  m.payload.copy(out, NLMSG_HDRLEN);
  return out;
}

/** Splits one received datagram into its messages. */
export function decodeMessages(buf: Buffer): NetlinkMessage[] {
  const out: NetlinkMessage[] = [];
  let off = 0;
  while (off + NLMSG_HDRLEN <= buf.length) {
    const h = nlmsghdr.decode(buf, off);
    if (h.len < NLMSG_HDRLEN || off + h.len > buf.length) {
      throw new DecodeError('nlmsghdr', off, `length ${h.len} does not fit the ${buf.length - off} bytes left`);
    }
    out.push({ type: h.type, flags: h.flags, seq: h.seq, pid: h.pid, payload: buf.subarray(off + NLMSG_HDRLEN, off + h.len) });
    off += align4(h.len);
  }
  if (off < buf.length && buf.length - off >= 4) {
    throw new DecodeError('nlmsghdr', off, `${buf.length - off} trailing bytes`);
  }
  return out;
}

export interface NetlinkAck {
  /** 0 for an ACK, otherwise a negative errno. */
  error: number;
  /** The header of the request this answers. */
  request: { type: number; flags: number; seq: number; pid: number };
  kernelMessage?: string;
  /** Offset of the offending attribute, relative to the start of our request's header. */
  offset?: number;
}

/** struct nlmsgerr { int error; struct nlmsghdr msg; } followed, with NLM_F_ACK_TLVS, by attributes. */
export function decodeAck(m: NetlinkMessage): NetlinkAck {
  const p = m.payload;
  if (p.length < 4 + NLMSG_HDRLEN) {
    // An NLMSG_DONE carries only the int; treat the missing header as zeros.
    if (p.length >= 4) return { error: p.readInt32LE(0), request: { type: 0, flags: 0, seq: m.seq, pid: 0 } };
    throw new DecodeError('nlmsgerr', 0, `payload of ${p.length} bytes is too short`);
  }
  const error = p.readInt32LE(0);
  const req = nlmsghdr.decode(p, 4);
  const ack: NetlinkAck = { error, request: { type: req.type, flags: req.flags, seq: req.seq, pid: req.pid } };
  if (m.flags & NLM_F_ACK_TLVS) {
    // Without NLM_F_CAPPED the kernel echoed our whole request before the TLVs.
    const tlvStart = m.flags & NLM_F_CAPPED ? 4 + NLMSG_HDRLEN : 4 + align4(req.len);
    if (tlvStart <= p.length) {
      const tlv = nlmsgerrAttrs.decode(p.subarray(tlvStart));
      if (tlv.msg !== undefined) ack.kernelMessage = tlv.msg;
      if (tlv.offset !== undefined) ack.offset = tlv.offset;
    }
  }
  return ack;
}

/** For NLMSG_DONE: the int error the dump ended with, and the extack if any. */
export function decodeDone(m: NetlinkMessage): NetlinkAck {
  const p = m.payload;
  const error = p.length >= 4 ? p.readInt32LE(0) : 0;
  const ack: NetlinkAck = { error, request: { type: 0, flags: 0, seq: m.seq, pid: m.pid } };
  if (m.flags & NLM_F_ACK_TLVS && p.length > 4) {
    const tlv = nlmsgerrAttrs.decode(p.subarray(4));
    if (tlv.msg !== undefined) ack.kernelMessage = tlv.msg;
    if (tlv.offset !== undefined) ack.offset = tlv.offset;
  }
  return ack;
}
