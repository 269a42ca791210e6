/**
 * The one answer to "which new connections does synhold hold": TCP SYNs (SYN set,
 * ACK clear: a connection's first packet, never a SYN-ACK or anything on an
 * established connection) of one IP family to one port, optionally only to a
 * destination prefix and/or from a source prefix. Every backend steers exactly
 * these: a u32 match each (src/rtnl/tc/cls_u32.ts synMatchKeys), an iptables
 * rule each (src/netfilter/rules.ts).
 */
import { prefixFamily, type IpFamily, type Prefix } from './prefix.js';
import type { SetupConfig } from './config.js';

export interface SynMatch {
  family: IpFamily;
  /** The protected server's port. */
  port: number;
  /** Only SYNs to this address/prefix. */
  dst?: Prefix;
  /** Only SYNs from this address/prefix (the seed's link-local mode). */
  src?: Prefix;
}

/**
 * The matches a configuration protects: one per (port, destination, source,
 * family). Without addresses a port is protected in both families; a destination
 * or source decides the family, and a destination and source of different
 * families never pair.
 */
export function synMatches(c: SetupConfig): SynMatch[] {
  const out: SynMatch[] = [];
  const dsts: (Prefix | undefined)[] = c.addresses.length ? c.addresses : [undefined];
  const srcs: (Prefix | undefined)[] = c.sources.length ? c.sources : [undefined];
  for (const port of c.ports) {
    for (const dst of dsts) {
      for (const src of srcs) {
        if (dst && src && prefixFamily(dst) !== prefixFamily(src)) continue;
        const families: IpFamily[] = dst ? [prefixFamily(dst)] : src ? [prefixFamily(src)] : [4, 6];
        for (const family of families) out.push({ family, port, dst, src });
      }
    }
  }
  return out;
}
