/**
 * The packets a buffer holds, in the order the kernel queued them (its packet
 * ids count up under the queue lock, so arrival order is id order), with what
 * `list` reports of each.
 */
import type { NfqPacket } from '../nfqueue/nfnetlink_queue.js';
import { NF_INET_LOCAL_OUT, NF_INET_POST_ROUTING } from '../nfqueue/nfnetlink_queue.js';
import { formatTcpFlags } from './filter.js';

export interface HeldPacket {
  /** The kernel's packet id in this queue (what a verdict names). */
  id: number;
  family: 4 | 6;
  /** `tcp`, `udp`, or the IP protocol number. */
  proto: string;
  src: string;
  sport?: number;
  dst: string;
  dport?: number;
  /** TCP flags that are on, `SYN,ACK` style (`-` for none); absent for UDP. */
  flags?: string;
  /** The packet's length in bytes, from its IP header on. */
  length: number;
  /** Milliseconds since the buffer saw it. */
  ageMs: number;
  /** Where it was queued: egress (raw OUTPUT) or ingress (raw PREROUTING). */
  at: 'egress' | 'ingress';
}

interface Entry {
  packet: NfqPacket;
  seenAt: number;
}

const PROTO_NAMES: Record<number, string> = { 6: 'tcp', 17: 'udp' };

export class HeldTable {
  /** Insertion order is id order (see the module comment). */
  private readonly entries = new Map<number, Entry>();

  add(p: NfqPacket): void {
    this.entries.set(p.id, { packet: p, seenAt: performance.now() });
  }

  get size(): number {
    return this.entries.size;
  }

  /** The oldest `n` ids, removed from the table (the caller gives their verdicts). */
  take(n: number): number[] {
    const ids = [...this.entries.keys()].slice(0, n);
    for (const id of ids) this.entries.delete(id);
    return ids;
  }

  /** Forget everything (the whole queue was accepted, or the watchdog released it). */
  clear(): number {
    const n = this.entries.size;
    this.entries.clear();
    return n;
  }

  list(): HeldPacket[] {
    const now = performance.now();
    return [...this.entries.values()].map(({ packet: p, seenAt }) => describe(p, now - seenAt));
  }
}

function describe(p: NfqPacket, ageMs: number): HeldPacket {
  const h = p.headers;
  const out: HeldPacket = {
    id: p.id,
    family: h?.family ?? (p.hwProtocol === 0x86dd ? 6 : 4),
    proto: h ? (PROTO_NAMES[h.protocol] ?? String(h.protocol)) : '?',
    src: h?.src ?? '?',
    dst: h?.dst ?? '?',
    length: p.length,
    ageMs: Math.round(ageMs * 10) / 10,
    at: p.hook === NF_INET_LOCAL_OUT || p.hook === NF_INET_POST_ROUTING ? 'egress' : 'ingress',
  };
  if (h?.sport !== undefined) out.sport = h.sport;
  if (h?.dport !== undefined) out.dport = h.dport;
  if (h?.tcpFlags !== undefined) out.flags = formatTcpFlags(h.tcpFlags);
  return out;
}

/** One line per packet, for the CLI: `#12 tcp 127.0.0.1:40000 > 127.0.0.1:16000 PSH,ACK len 57 age 120.5ms`. */
export function formatHeld(p: HeldPacket): string {
  const ep = (a: string, port?: number) => `${p.family === 6 ? `[${a}]` : a}${port !== undefined ? `:${port}` : ''}`;
  return `#${p.id} ${p.proto} ${ep(p.src, p.sport)} > ${ep(p.dst, p.dport)}${p.flags ? ` ${p.flags}` : ''} len ${p.length} age ${p.ageMs.toFixed(1)}ms ${p.at}`;
}
