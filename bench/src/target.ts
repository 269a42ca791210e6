// Which addresses the bench may send traffic to.
//
// WHY this exists: the bench is a load generator. On this project's machines (and
// on a user's laptop) it must never aim thousands of connections a second at
// somebody else's host because of a typo. So the load generator only accepts:
//   - the loopback range 127.0.0.0/8 and ::1 (and "localhost", mapped to
//     127.0.0.1 without any DNS lookup), always;
//   - any other IP literal ONLY when the caller says it is namespace-local
//     (`namespaceLocal: true`: the bench runs inside network namespaces it
//     created itself, e.g. the seed's link-local 169.254.x.x address on lo), and
//     even then only if that is plausible: the address is assigned to an
//     interface of the current network namespace, or this process runs in a
//     network namespace other than PID 1's (i.e. inside one the bench made).
// Host names other than "localhost" are refused: no resolver is ever asked.

import { BlockList, isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { readlinkSync } from 'node:fs';

export class TargetRefusedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TargetRefusedError';
  }
}

const loopback = new BlockList();
loopback.addSubnet('127.0.0.0', 8, 'ipv4');
loopback.addAddress('::1', 'ipv6');

/** True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (::ffff:127.x.y.z). */
export function isLoopback(address: string): boolean {
  const fam = isIP(address);
  if (fam === 4) return loopback.check(address, 'ipv4');
  if (fam === 6) {
    if (loopback.check(address, 'ipv6')) return true;
    const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
    return m !== null && loopback.check(m[1]!, 'ipv4');
  }
  return false;
}

/** Addresses assigned to interfaces of the network namespace we run in. */
export function localInterfaceAddresses(): Set<string> {
  const out = new Set<string>();
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) out.add(a.address.replace(/%.*$/, '').toLowerCase());
  }
  return out;
}

/** True when this process's network namespace is not PID 1's: we were started
 * inside a namespace (made by the bench or the kernel lab). Unknown → false. */
export function inNonInitialNetns(): boolean {
  try {
    return readlinkSync('/proc/self/ns/net') !== readlinkSync('/proc/1/ns/net');
  } catch {
    return false;
  }
}

export interface TargetCheckOptions {
  /** The caller asserts the address lives in a network namespace the bench created. */
  namespaceLocal?: boolean;
}

/**
 * Validate a target host and return the IP literal to connect to.
 * Throws TargetRefusedError for anything not allowed (before any packet is sent).
 */
export function checkTarget(host: string, opts: TargetCheckOptions = {}): string {
  const h = host.trim().replace(/^\[(.*)\]$/, '$1');
  if (h.toLowerCase() === 'localhost') return '127.0.0.1';
  if (isIP(h) === 0) {
    throw new TargetRefusedError(
      `refusing target ${JSON.stringify(host)}: give an IP literal (127.0.0.0/8, ::1, or a namespace-local address); host names are not resolved`,
    );
  }
  if (isLoopback(h)) return h;
  if (!opts.namespaceLocal) {
    throw new TargetRefusedError(
      `refusing target ${h}: only loopback (127.0.0.0/8, ::1) unless namespaceLocal is set for an address inside a network namespace the bench created`,
    );
  }
  if (localInterfaceAddresses().has(h.toLowerCase()) || inNonInitialNetns()) return h;
  throw new TargetRefusedError(
    `refusing target ${h}: marked namespace-local, but it is not assigned to any interface here and this process runs in the initial network namespace`,
  );
}
