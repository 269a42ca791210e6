/**
 * What `synhold buffer` holds: every packet of one protocol (TCP or UDP) that
 * matches a 5-tuple pattern (any subset of source/destination address and port),
 * optionally only with some TCP flags, in one direction of the flow or both, at
 * one place on one device. Validated here, before anything touches the kernel,
 * so bad input changes nothing; turned into iptables rules by steering.ts.
 */
import { ConfigError, parseAddress, parsePort, validateDevice } from '../model/config.js';
import { formatPrefix, prefixFamily, type IpFamily, type Prefix } from '../model/prefix.js';

export type BufferProto = 'tcp' | 'udp';
/** `one`: packets from src/sport to dst/dport only; `both`: their replies too (the pattern mirrored). */
export type BufferDirection = 'one' | 'both';
/** Where on the device: as it leaves (sent by this host) or as it arrives. */
export type BufferHook = 'egress' | 'ingress';

/** TCP flags as iptables names them, and their bits in the TCP header's flags byte. */
export const TCP_FLAG_BITS = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10, URG: 0x20, ECE: 0x40, CWR: 0x80 } as const;
export type TcpFlagName = keyof typeof TCP_FLAG_BITS;

/** "Among the flags in `mask`, exactly those in `set` are on" (iptables --tcp-flags MASK SET). */
export interface TcpFlagMatch {
  set: number;
  mask: number;
}

export interface BufferFilter {
  proto: BufferProto;
  src?: Prefix;
  dst?: Prefix;
  sport?: number;
  dport?: number;
  tcpFlags?: TcpFlagMatch;
  direction: BufferDirection;
  /** The device (default lo, where local clients and servers talk). */
  dev: string;
  at: BufferHook;
}

/** The filter as a caller writes it: addresses and flags as strings, everything optional but one address or port. */
export interface BufferFilterInput {
  proto?: BufferProto;
  /** `A` or `A/LEN`, IPv4 or IPv6. */
  src?: string;
  dst?: string;
  sport?: number | string;
  dport?: number | string;
  /** `SET[/MASK]`, comma-separated flag names: `FIN` (FIN on), `SYN/SYN,ACK` (SYN on, ACK off). */
  tcpFlags?: string;
  direction?: BufferDirection;
  dev?: string;
  at?: BufferHook;
}

/** One direction of the flow as a rule matches it (the mirrored one swaps source and destination). */
export interface Flow {
  family: IpFamily;
  /** `fwd`: as the filter says; `rev`: its replies. */
  way: 'fwd' | 'rev';
  src?: Prefix;
  dst?: Prefix;
  sport?: number;
  dport?: number;
}

/** Parses `FLAG,FLAG[/FLAG,FLAG]`: the flags that must be on, then (optionally) all the flags looked at. */
export function parseTcpFlags(s: string): TcpFlagMatch {
  const parts = s.split('/');
  if (parts.length > 2) throw new ConfigError(`--tcp-flags "${s}" is not SET or SET/MASK (e.g. FIN, SYN/SYN,ACK)`);
  const bits = (list: string, what: string): number => {
    if (list.trim() === '') return 0;
    let n = 0;
    for (const name of list.split(',')) {
      const bit = TCP_FLAG_BITS[name.trim().toUpperCase() as TcpFlagName];
      if (bit === undefined) throw new ConfigError(`--tcp-flags "${s}": "${name}" is not a TCP flag (${Object.keys(TCP_FLAG_BITS).join(' ')}) in its ${what}`);
      n |= bit;
    }
    return n;
  };
  const set = bits(parts[0]!, 'set');
  const mask = parts.length === 2 ? bits(parts[1]!, 'mask') : set;
  if (mask === 0) throw new ConfigError(`--tcp-flags "${s}" looks at no flag: nothing to match`);
  if ((set & ~mask) !== 0) throw new ConfigError(`--tcp-flags "${s}": the flags to be on must be among those looked at (SET/MASK)`);
  return { set, mask };
}

/** `SYN,ACK` from the flags byte (`-` when none is on). */
export function formatTcpFlags(bits: number): string {
  const on = Object.entries(TCP_FLAG_BITS)
    .filter(([, b]) => (bits & b) !== 0)
    .map(([n]) => n);
  return on.length ? on.join(',') : '-';
}

function optionalPort(flag: string, p: number | string | undefined): number | undefined {
  if (p === undefined || p === '') return undefined;
  try {
    return parsePort(p);
  } catch {
    throw new ConfigError(`${flag} "${p}" is not a port in 1..65535`);
  }
}

function oneOf<T extends string>(flag: string, v: string | undefined, allowed: readonly T[], fallback: T): T {
  if (v === undefined) return fallback;
  if (!(allowed as readonly string[]).includes(v)) throw new ConfigError(`${flag} must be ${allowed.join(' or ')}, not "${v}"`);
  return v as T;
}

/** Checks and normalises a filter; throws ConfigError (exit 2) with one line naming the problem. */
export function normalizeFilter(i: BufferFilterInput): BufferFilter {
  const proto = oneOf('--proto', i.proto, ['tcp', 'udp'] as const, 'tcp');
  const src = i.src !== undefined ? parseAddress(i.src) : undefined;
  const dst = i.dst !== undefined ? parseAddress(i.dst) : undefined;
  if (src && dst && prefixFamily(src) !== prefixFamily(dst)) throw new ConfigError('--src and --dst name different IP families: nothing could match');
  const sport = optionalPort('--sport', i.sport);
  const dport = optionalPort('--dport', i.dport);
  // Holding every TCP packet of a device (ssh included) is never what a race reproduction wants.
  if (!src && !dst && sport === undefined && dport === undefined) {
    throw new ConfigError('a buffer needs at least one of --src, --dst, --sport, --dport: it would hold every packet of the protocol');
  }
  let tcpFlags: TcpFlagMatch | undefined;
  if (i.tcpFlags !== undefined) {
    if (proto !== 'tcp') throw new ConfigError('--tcp-flags needs --proto tcp');
    tcpFlags = parseTcpFlags(i.tcpFlags);
  }
  const f: BufferFilter = {
    proto,
    direction: oneOf('--direction', i.direction, ['one', 'both'] as const, 'one'),
    dev: validateDevice(i.dev ?? 'lo'),
    at: oneOf('--at', i.at, ['egress', 'ingress'] as const, 'egress'),
  };
  if (src) f.src = src;
  if (dst) f.dst = dst;
  if (sport !== undefined) f.sport = sport;
  if (dport !== undefined) f.dport = dport;
  if (tcpFlags) f.tcpFlags = tcpFlags;
  return f;
}

/**
 * The directions a filter holds, per IP family: an address decides the family;
 * without one, both IPv4 and IPv6 are held (a client that resolves `localhost`
 * to ::1 is still held).
 */
export function flowsOf(f: BufferFilter): Flow[] {
  const addr = f.src ?? f.dst;
  const families: IpFamily[] = addr ? [prefixFamily(addr)] : [4, 6];
  const out: Flow[] = [];
  for (const family of families) {
    out.push(strip({ family, way: 'fwd', src: f.src, dst: f.dst, sport: f.sport, dport: f.dport }));
    if (f.direction === 'both') out.push(strip({ family, way: 'rev', src: f.dst, dst: f.src, sport: f.dport, dport: f.sport }));
  }
  return out;
}

function strip(flow: Flow): Flow {
  for (const k of ['src', 'dst', 'sport', 'dport'] as const) if (flow[k] === undefined) delete flow[k];
  return flow;
}

/** For people: `tcp 127.0.0.1:* -> *:16000 [SYN/SYN,ACK] and back, lo egress`. */
export function describeFilter(f: BufferFilter): string {
  const end = (a: Prefix | undefined, p: number | undefined) => `${a ? formatPrefix(a) : '*'}:${p ?? '*'}`;
  const flags = f.tcpFlags ? ` [${formatTcpFlags(f.tcpFlags.set)}/${formatTcpFlags(f.tcpFlags.mask)}]` : '';
  return `${f.proto} ${end(f.src, f.sport)} -> ${end(f.dst, f.dport)}${flags}${f.direction === 'both' ? ' and back' : ''}, ${f.dev} ${f.at}`;
}
