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
