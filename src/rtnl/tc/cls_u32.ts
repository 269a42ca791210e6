/**
 * cls_u32 (net/sched/cls_u32.c): match 32-bit words at byte offsets of the
 * network header. synhold uses it to pick out new TCP connections (SYN set, ACK
 * clear) to the protected ports and addresses.
 *
 * Known limits of a single-level u32 match, and what synhold does about them:
 * - IPv4 options shift the TCP header. The match pins IHL=5 (no options), so a
 *   SYN carrying IP options does not match and passes unheld: it behaves as if
 *   synhold were not there (fail-open), never worse. Real clients do not send IP
 *   options on SYNs. (Following IHL needs a hash-table link with `offset at 0
 *   mask 0f00 shift 6 eat`; not worth three kernel objects for that case.)
 * - IPv6 extension headers likewise: only a TCP header right after the fixed
 *   40-byte header matches (next header = 6).
 * - Fragments: the IPv4 match requires fragment offset 0, so the bytes of a
 *   later fragment can never be mistaken for a SYN.
 */
import { BadAddressError, BadPortError } from '../../model/errors.js';
import { EncodeError } from '../../netlink/errors.js';
import { isIPv4 } from '../../model/ip.js';
import { addressBytes, prefixFamily, type Prefix } from '../../model/prefix.js';
import type { SynMatch } from '../../model/syn-match.js';
import { defineAttributes, defineStruct } from '../../netlink/schema.js';
import { decodeActionList, encodeActionList, tcaActAttrs, type ActionSpec } from './actions.js';
import type { TcKind } from './kind.js';

/** struct tc_u32_sel without its flexible keys[] (include/uapi/linux/pkt_cls.h); C pads after nkeys. */
export const tcU32Sel = defineStruct('tc_u32_sel', [
  ['flags', 'u8'],
  ['offshift', 'u8'],
  ['nkeys', 'u8'],
  ['pad', 'u8'],
  ['offmask', 'be16'],
  ['off', 'u16'],
  ['offoff', 's16'],
  ['hoff', 's16'],
  ['hmask', 'be32'],
] as const);

/** struct tc_u32_key: mask and val are network order, off is a byte offset. */
export const tcU32Key = defineStruct('tc_u32_key', [
  ['mask', 'be32'],
  ['val', 'be32'],
  ['off', 's32'],
  ['offmask', 's32'],
] as const);

export const TC_U32_TERMINAL = 1;
export const TC_U32_OFFSET = 2;
export const TC_U32_VAROFFSET = 4;
export const TC_U32_EAT = 8;

/** TCA_U32_* */
export const u32Attrs = defineAttributes('tca_u32', {
  classid: { type: 1, kind: 'u32' },
  hash: { type: 2, kind: 'u32' },
  link: { type: 3, kind: 'u32' },
  divisor: { type: 4, kind: 'u32' },
  sel: { type: 5, kind: 'binary' },
  police: { type: 6, kind: 'binary' },
  act: { type: 7, kind: 'array', set: () => tcaActAttrs },
  indev: { type: 8, kind: 'string' },
  pcnt: { type: 9, kind: 'binary' },
  mark: { type: 10, kind: 'binary' },
  flags: { type: 11, kind: 'u32' },
  pad: { type: 12, kind: 'binary' },
});

export interface U32Key {
  /** Network-order 32-bit word, as a number. */
  mask: number;
  val: number;
  /** Byte offset from the network header, a multiple of 4. */
  off: number;
  offmask?: number;
}

export interface U32Options {
  keys: readonly U32Key[];
  /** Class to send matches to (`flowid 1:4`). */
  classid?: number;
  actions?: readonly ActionSpec[];
  /** Selector flags; TERMINAL is set, as tc does, whenever classid or actions are given. */
  selFlags?: number;
}

export function encodeSel(flags: number, keys: readonly U32Key[]): Buffer {
  if (keys.length > 128) throw new EncodeError('tc_u32_sel', `${keys.length} keys is more than u32 allows (128)`);
  return Buffer.concat([
    tcU32Sel.encode({ flags, nkeys: keys.length }),
    ...keys.map((k) => tcU32Key.encode({ mask: k.mask >>> 0, val: k.val >>> 0, off: k.off, offmask: k.offmask ?? 0 })),
  ]);
}

export function decodeSel(buf: Buffer): { flags: number; keys: U32Key[] } {
  const sel = tcU32Sel.decode(buf);
  const keys: U32Key[] = [];
  for (let i = 0; i < sel.nkeys; i++) {
    const k = tcU32Key.decode(buf, tcU32Sel.size + i * tcU32Key.size);
    keys.push({ mask: k.mask, val: k.val, off: k.off, offmask: k.offmask });
  }
  return { flags: sel.flags, keys };
}

export const clsU32: TcKind<U32Options> = {
  kind: 'u32',
  encodeOptions(o) {
    const terminal = o.classid !== undefined || (o.actions?.length ?? 0) > 0 ? TC_U32_TERMINAL : 0;
    const values: Parameters<typeof u32Attrs.encode>[0] = {};
    // tc emits the classid while parsing `flowid`, then actions, then the selector last.
    if (o.classid !== undefined) values.classid = o.classid;
    if (o.actions?.length) values.act = encodeActionList(o.actions);
    values.sel = encodeSel((o.selFlags ?? 0) | terminal, o.keys);
    return u32Attrs.encode(values);
  },
  decodeOptions(payload) {
    const a = u32Attrs.decode(payload);
    const out: Record<string, unknown> = {};
    if (a.classid !== undefined) out.classid = a.classid;
    if (a.hash !== undefined) out.hash = a.hash;
    if (a.link !== undefined) out.link = a.link;
    if (a.divisor !== undefined) out.divisor = a.divisor;
    if (a.sel) Object.assign(out, decodeSel(a.sel));
    if (a.act) out.actions = decodeActionList(a.act);
    if (a.unknown) out.unknown = a.unknown;
    return out;
  },
};

// ---------------------------------------------------------------------------
// Building keys the way tc's `match` does (iproute2 tc/f_u32.c pack_key*)
// ---------------------------------------------------------------------------

/** Adds a 32-bit key, merging with a key at the same offset as tc does; rejects contradictions. */
export function packKey(keys: U32Key[], val: number, mask: number, off: number): void {
  if (off % 4 !== 0) throw new EncodeError('u32 key', `offset ${off} is not a multiple of 4`);
  const v = (val & mask) >>> 0;
  const existing = keys.find((k) => k.off === off && (k.offmask ?? 0) === 0);
  if (existing) {
    if (((existing.val ^ v) & existing.mask & mask) >>> 0) {
      throw new EncodeError('u32 key', `contradictory matches at offset ${off}`);
    }
    existing.val = (existing.val | v) >>> 0;
    existing.mask = (existing.mask | mask) >>> 0;
    return;
  }
  keys.push({ mask: mask >>> 0, val: v, off });
}

/** `match u8 VAL MASK at OFF` */
export function packKey8(keys: U32Key[], val: number, mask: number, at: number): void {
  const shift = 24 - (at & 3) * 8;
  packKey(keys, ((val & 0xff) << shift) >>> 0, ((mask & 0xff) << shift) >>> 0, at & ~3);
}

/** `match u16 VAL MASK at OFF` (OFF even) */
export function packKey16(keys: U32Key[], val: number, mask: number, at: number): void {
  if (at % 2) throw new EncodeError('u32 key', `u16 match at odd offset ${at}`);
  const shift = at & 2 ? 0 : 16;
  packKey(keys, ((val & 0xffff) << shift) >>> 0, ((mask & 0xffff) << shift) >>> 0, at & ~3);
}

/** `match u32 VAL MASK at OFF` */
export function packKey32(keys: U32Key[], val: number, mask: number, at: number): void {
  packKey(keys, val >>> 0, mask >>> 0, at);
}

function ipv6Words(address: string): number[] {
  const b = addressBytes(address);
  return [0, 1, 2, 3].map((i) => b.readUInt32BE(4 * i));
}

function prefixMask(bits: number): number {
  return bits <= 0 ? 0 : bits >= 32 ? 0xffffffff : (0xffffffff << (32 - bits)) >>> 0;
}

/** `match ip src|dst A/LEN` or `match ip6 src|dst A/LEN` */
export function packAddress(keys: U32Key[], p: Prefix, which: 'src' | 'dst'): void {
  if (isIPv4(p.address)) {
    const word = p.address.split('.').reduce((acc, o) => ((acc << 8) | Number(o)) >>> 0, 0);
    if (p.prefixLength > 0) packKey32(keys, word, prefixMask(p.prefixLength), which === 'src' ? 12 : 16);
    return;
  }
  const words = ipv6Words(p.address);
  const base = which === 'src' ? 8 : 24;
  for (let i = 0; i < 4; i++) {
    const bits = Math.min(32, Math.max(0, p.prefixLength - 32 * i));
    if (bits > 0) packKey32(keys, words[i]!, prefixMask(bits), base + 4 * i);
  }
}

/**
 * Keys for "a TCP SYN without ACK to dport P" (new connections only: SYN-ACKs
 * and everything on established connections are left alone).
 * IPv4 equivalent: `match ip protocol 6 0xff match u8 0x05 0x0f at 0
 *   match u16 0 0x1fff at 6 match ip dport P 0xffff match u8 0x02 0x12 at 33`.
 * IPv6 equivalent: `match ip6 protocol 6 0xff match ip6 dport P 0xffff match u8 0x02 0x12 at 53`.
 */
export function synMatchKeys(m: SynMatch): U32Key[] {
  if (!Number.isInteger(m.port) || m.port < 1 || m.port > 65535) {
    throw new BadPortError(`port ${m.port} is not in 1..65535`);
  }
  const keys: U32Key[] = [];
  for (const p of [m.src, m.dst]) {
    if (p && prefixFamily(p) !== m.family) {
      throw new BadAddressError(`${p.address} is not an IPv${m.family} address`);
    }
  }
  if (m.family === 4) {
    packKey8(keys, 6, 0xff, 9); // protocol TCP
    packKey8(keys, 0x05, 0x0f, 0); // IHL 5: TCP header at byte 20
    packKey16(keys, 0, 0x1fff, 6); // first fragment only
    if (m.src) packAddress(keys, m.src, 'src');
    if (m.dst) packAddress(keys, m.dst, 'dst');
    packKey16(keys, m.port, 0xffff, 22); // TCP dport
    packKey8(keys, 0x02, 0x12, 33); // flags: SYN set, ACK clear
  } else {
    packKey8(keys, 6, 0xff, 6); // next header TCP
    if (m.src) packAddress(keys, m.src, 'src');
    if (m.dst) packAddress(keys, m.dst, 'dst');
    packKey16(keys, m.port, 0xffff, 42);
    packKey8(keys, 0x02, 0x12, 53);
  }
  return keys;
}
