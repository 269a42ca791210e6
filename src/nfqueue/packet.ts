/**
 * The IP and TCP headers of a queued packet, read from the first bytes the
 * kernel copied (NFQNL_COPY_PACKET with a small copy range). Only what a SYN
 * holder (or a buffer's list) wants to report: addresses, ports (TCP, UDP) and TCP flags. Anything shorter or
 * stranger than expected yields `undefined` fields, never an exception: a
 * packet we cannot parse must still be held and released like any other.
 */
import { isIPv4 } from '../model/ip.js';

export interface PacketHeaders {
  family: 4 | 6;
  src: string;
  dst: string;
  /** IP protocol number (6 for TCP, 17 for UDP); for IPv6, the first next-header (no extension header walk). */
  protocol: number;
  sport?: number;
  dport?: number;
  /** TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, ...). */
  tcpFlags?: number;
}

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_ACK = 0x10;

const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;

function ipv6ToString(b: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  // Collapse the longest run of zero groups (RFC 5952), enough for logs and tests.
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

/** Ports (TCP and UDP put them first, in the same place) and, for TCP, the flags byte. */
function tcp(out: PacketHeaders, buf: Buffer, off: number): PacketHeaders {
  if (out.protocol === IPPROTO_UDP && buf.length >= off + 8) {
    out.sport = buf.readUInt16BE(off);
    out.dport = buf.readUInt16BE(off + 2);
  }
  if (out.protocol !== IPPROTO_TCP || buf.length < off + 14) return out;
  out.sport = buf.readUInt16BE(off);
  out.dport = buf.readUInt16BE(off + 2);
  out.tcpFlags = buf.readUInt8(off + 13);
  return out;
}

/** Parses the network header at the start of an NFQA_PAYLOAD (which starts at the IP header). */
export function parsePacketHeaders(payload: Buffer | undefined): PacketHeaders | undefined {
  if (!payload || payload.length < 1) return undefined;
  const version = payload.readUInt8(0) >> 4;
  if (version === 4) {
    if (payload.length < 20) return undefined;
    const ihl = (payload.readUInt8(0) & 0x0f) * 4;
    const out: PacketHeaders = {
      family: 4,
      src: [...payload.subarray(12, 16)].join('.'),
      dst: [...payload.subarray(16, 20)].join('.'),
      protocol: payload.readUInt8(9),
    };
    // A fragment other than the first has no TCP header at its start.
    const fragOffset = payload.readUInt16BE(6) & 0x1fff;
    return fragOffset === 0 && ihl >= 20 ? tcp(out, payload, ihl) : out;
  }
  if (version === 6) {
    if (payload.length < 40) return undefined;
    const out: PacketHeaders = {
      family: 6,
      src: ipv6ToString(payload.subarray(8, 24)),
      dst: ipv6ToString(payload.subarray(24, 40)),
      protocol: payload.readUInt8(6),
    };
    return tcp(out, payload, 40);
  }
  return undefined;
}

/** For tests and logs: `a.b.c.d:p` or `[v6]:p`. */
export function endpoint(addr: string, port: number | undefined): string {
  const a = isIPv4(addr) ? addr : `[${addr}]`;
  return port === undefined ? a : `${a}:${port}`;
}
