/** IP addresses and prefixes as synhold's configuration names them (`--address`, `--source`). */
import { isIPv4, isIPv6 } from './ip.js';
import { BadAddressError } from './errors.js';

export type IpFamily = 4 | 6;

export interface Prefix {
  address: string;
  prefixLength: number;
}

/** Parses `A` or `A/LEN` for IPv4 or IPv6. */
export function parsePrefix(s: string): Prefix {
  const [address = '', len] = s.split('/');
  const max = isIPv4(address) ? 32 : isIPv6(address) ? 128 : 0;
  if (!max) throw new BadAddressError(`"${s}" is not an IPv4 or IPv6 address`);
  const prefixLength = len === undefined ? max : Number(len);
  if (!Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > max || (len !== undefined && !/^\d+$/.test(len))) {
    throw new BadAddressError(`"${s}": prefix length must be 0..${max}`);
  }
  return { address, prefixLength };
}

export function prefixFamily(p: Prefix): IpFamily {
  return isIPv4(p.address) ? 4 : 6;
}

/** `A` for a single address, `A/LEN` for a shorter prefix (as iptables and tc print them). */
export function formatPrefix(p: Prefix): string {
  return p.prefixLength === (prefixFamily(p) === 4 ? 32 : 128) ? p.address : `${p.address}/${p.prefixLength}`;
}

/** An address's bytes in network order: 4 for IPv4, 16 for IPv6 (`::` and an embedded IPv4 tail expanded). */
export function addressBytes(address: string): Buffer {
  if (isIPv4(address)) return Buffer.from(address.split('.').map(Number));
  if (!isIPv6(address)) throw new BadAddressError(`"${address}" is not an IPv4 or IPv6 address`);
  let a = address;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  if (v4) {
    const b = v4[1]!.split('.').map(Number);
    a = a.slice(0, -v4[1]!.length) + `${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const [head, tail] = a.split('::');
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), 2 * i));
  return out;
}

/** The mask of a prefix of `bits` bits over `bytes` bytes, in network order. */
export function prefixMaskBytes(bits: number, bytes: number): Buffer {
  const out = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) out[i] = 0xff & ~(0xff >> Math.min(8, Math.max(0, bits - 8 * i)));
  return out;
}
