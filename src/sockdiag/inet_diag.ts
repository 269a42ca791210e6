/**
 * TCP listeners as the kernel sees them, over NETLINK_SOCK_DIAG
 * (include/uapi/linux/sock_diag.h, include/uapi/linux/inet_diag.h,
 * net/ipv4/inet_diag.c): the protect loop polls this to decide when a reload is
 * done ("the new listener is accepting and the old one is gone").
 *
 * Equivalent to: `ss -Hltne '( sport = :P1 or sport = :P2 )'`, one dump per
 * address family, filtered in the kernel by the same bytecode ss sends.
 */
import { BadPortError, ConfigError } from '../model/errors.js';
import { type NetlinkError } from '../netlink/errors.js';
import { defineAttributes, defineStruct, encodeAttr, type AttrValues } from '../netlink/schema.js';
import { NETLINK_SOCK_DIAG, NetlinkSocket } from '../netlink/socket.js';

/** include/uapi/linux/sock_diag.h */
export const SOCK_DIAG_BY_FAMILY = 20;

export const AF_INET = 2;
export const AF_INET6 = 10;
export const IPPROTO_TCP = 6;

/** include/net/tcp_states.h: TCP_LISTEN; the request's idiag_states is a bitmask of 1 << state. */
export const TCP_LISTEN = 10;
export const TCPF_LISTEN = 1 << TCP_LISTEN;
/** A connection mid-handshake: the kernel reports its request sockets (TCP_NEW_SYN_RECV) with this state, and dumps them when asked for it. */
export const TCP_SYN_RECV = 3;
export const TCPF_SYN_RECV = 1 << TCP_SYN_RECV;

export type InetFamily = 'ipv4' | 'ipv6';
const FAMILY_NUMBER: Record<InetFamily, number> = { ipv4: AF_INET, ipv6: AF_INET6 };
const ALL_FAMILIES: readonly InetFamily[] = ['ipv4', 'ipv6'];

// ---------------------------------------------------------------------------
// Layouts (include/uapi/linux/inet_diag.h)
// ---------------------------------------------------------------------------

/**
 * struct inet_diag_sockid. Ports and addresses are network order; the
 * addresses are kept as 16 raw bytes (an IPv4 address uses the first 4).
 * idiag_cookie[2] is two host-order u32, low word first.
 */
const SOCKID_FIELDS = [
  ['sport', 'be16'],
  ['dport', 'be16'],
  ['src', 'bytes', 16],
  ['dst', 'bytes', 16],
  ['if', 'u32'],
  ['cookieLo', 'u32'],
  ['cookieHi', 'u32'],
] as const;
export const inetDiagSockid = defineStruct('inet_diag_sockid', SOCKID_FIELDS);

/** struct inet_diag_req_v2 (with struct inet_diag_sockid flattened in), 56 bytes. */
export const inetDiagReqV2 = defineStruct('inet_diag_req_v2', [
  ['family', 'u8'],
  ['protocol', 'u8'],
  ['ext', 'u8'],
  ['pad', 'u8'],
  ['states', 'u32'],
  ...SOCKID_FIELDS,
] as const);

/** struct inet_diag_msg (with struct inet_diag_sockid flattened in), 72 bytes. */
export const inetDiagMsg = defineStruct('inet_diag_msg', [
  ['family', 'u8'],
  ['state', 'u8'],
  ['timer', 'u8'],
  ['retrans', 'u8'],
  ...SOCKID_FIELDS,
  ['expires', 'u32'],
  ['rqueue', 'u32'],
  ['wqueue', 'u32'],
  ['uid', 'u32'],
  ['inode', 'u32'],
] as const);

/** enum { INET_DIAG_REQ_* }: attributes after struct inet_diag_req_v2. */
export const INET_DIAG_REQ_BYTECODE = 1;

/** struct inet_diag_bc_op { unsigned char code; unsigned char yes; unsigned short no; } */
export const inetDiagBcOp = defineStruct('inet_diag_bc_op', [
  ['code', 'u8'],
  ['yes', 'u8'],
  ['no', 'u16'],
] as const);

/** struct inet_diag_hostcond { __u8 family; __u8 prefix_len; int port; __be32 addr[]; } (2 bytes of padding before port). */
export const inetDiagHostcond = defineStruct('inet_diag_hostcond', [
  ['family', 'u8'],
  ['prefixLen', 'u8'],
  ['pad', 'u16'],
  ['port', 's32'],
] as const);

/** enum { INET_DIAG_BC_* } (only the ops synhold emits). */
export const INET_DIAG_BC_JMP = 1;
export const INET_DIAG_BC_S_COND = 7;

/** struct inet_diag_meminfo */
export const inetDiagMeminfo = defineStruct('inet_diag_meminfo', [
  ['rmem', 'u32'],
  ['wmem', 'u32'],
  ['fmem', 'u32'],
  ['tmem', 'u32'],
] as const);

/**
 * enum { INET_DIAG_* }: attributes after struct inet_diag_msg. The kernel sends
 * SHUTDOWN, SKV6ONLY (IPv6 listeners), MARK (to CAP_NET_ADMIN), CGROUP_ID and
 * SOCKOPT without being asked; the rest only when requested in idiag_ext.
 * Payloads synhold does not interpret stay binary; types not listed here
 * survive in `unknown`.
 */
export const inetDiagAttrs = defineAttributes('inet_diag_attrs', {
  meminfo: { type: 1, kind: 'struct', struct: inetDiagMeminfo },
  info: { type: 2, kind: 'binary' }, // struct tcp_info
  vegasinfo: { type: 3, kind: 'binary' },
  cong: { type: 4, kind: 'string' },
  tos: { type: 5, kind: 'u8' },
  tclass: { type: 6, kind: 'u8' },
  skmeminfo: { type: 7, kind: 'binary' }, // __u32[SK_MEMINFO_VARS]
  shutdown: { type: 8, kind: 'u8' },
  dctcpinfo: { type: 9, kind: 'binary' },
  protocol: { type: 10, kind: 'u8' },
  skv6only: { type: 11, kind: 'u8' },
  locals: { type: 12, kind: 'binary' },
  peers: { type: 13, kind: 'binary' },
  pad: { type: 14, kind: 'binary' },
  mark: { type: 15, kind: 'u32' },
  bbrinfo: { type: 16, kind: 'binary' },
  classId: { type: 17, kind: 'u32' },
  md5sig: { type: 18, kind: 'binary' },
  ulpInfo: { type: 19, kind: 'binary' },
  skBpfStorages: { type: 20, kind: 'binary' },
  cgroupId: { type: 21, kind: 'u64' },
  sockopt: { type: 22, kind: 'binary' }, // struct inet_diag_sockopt: bitfields
});
export type InetDiagAttrValues = AttrValues<typeof inetDiagAttrs.spec>;

// ---------------------------------------------------------------------------
// Codec
// ---------------------------------------------------------------------------

/** One socket from an inet_diag dump, every field as the kernel sent it. */
export interface InetDiagSocket {
  family: number;
  state: number;
  timer: number;
  retrans: number;
  sport: number;
  dport: number;
  src: string;
  dst: string;
  /** Device the socket is bound to (SO_BINDTODEVICE), 0 if none. */
  ifindex: number;
  /** The socket cookie in hex, as `ss -e` prints it after `sk:`. Unique until reboot: the kernel never reuses one. */
  cookie: string;
  expires: number;
  /** For a listener: its accept queue's current length. */
  rqueue: number;
  /** For a listener: the backlog given to listen(), capped by net.core.somaxconn. */
  wqueue: number;
  uid: number;
  /** 0 once the socket has no file (orphaned). */
  inode: number;
  attrs: InetDiagAttrValues;
}

/**
 * The kernel-side filter "sport = :P1 or sport = :P2 ...", byte for byte what
 * `ss '( sport = :P1 or sport = :P2 )'` sends (iproute2 misc/ss.c ssfilter_bytecompile).
 *
 * The interpreter (net/ipv4/inet_diag.c inet_diag_bc_run) walks ops, moving
 * `yes` bytes forward when the op matches and `no` bytes when it does not; the
 * socket is accepted when it lands exactly on the end, rejected when it jumps
 * past it. Each test is S_COND {yes: 16, no: 20}: a match falls onto the
 * following JMP, a miss skips that JMP onto the next test (the last test's
 * miss overshoots the end by 4: rejected). Each JMP {yes: 4, no: 20} always
 * takes `no`, over the next test, onto the next JMP or the end (accepted).
 * The address family AF_UNSPEC matches any address; like ss, a 4-byte zero
 * address follows each hostcond though the kernel needs none for AF_UNSPEC.
 */
export function sportBytecode(ports: readonly number[]): Buffer {
  if (ports.length === 0) throw new BadPortError('a port filter needs at least one port');
  const COND = 16; // op 4 + hostcond 8 + address 4
  const JMP = 4;
  const out = Buffer.alloc(ports.length * COND + (ports.length - 1) * JMP);
  let off = 0;
  ports.forEach((port, i) => {
    if (i > 0) {
      inetDiagBcOp.encodeInto(out, off, { code: INET_DIAG_BC_JMP, yes: JMP, no: COND + JMP });
      off += JMP;
    }
    inetDiagBcOp.encodeInto(out, off, { code: INET_DIAG_BC_S_COND, yes: COND, no: COND + JMP });
    inetDiagHostcond.encodeInto(out, off + inetDiagBcOp.size, { family: 0, prefixLen: 0, port });
    off += COND;
  });
  return out;
}

export interface InetDiagRequest {
  family: number;
  protocol?: number;
  /** Bitmask of 1 << TCP state. */
  states: number;
  /** idiag_ext: bitmask of 1 << (INET_DIAG_x - 1) for extensions wanted in replies. */
  ext?: number;
  /** Only sockets whose local port is one of these (INET_DIAG_REQ_BYTECODE). */
  sports?: readonly number[];
}

/** The payload of a SOCK_DIAG_BY_FAMILY dump request: struct inet_diag_req_v2, then the optional bytecode. */
export function encodeInetDiagRequest(r: InetDiagRequest): Buffer {
  const head = inetDiagReqV2.encode({ family: r.family, protocol: r.protocol ?? IPPROTO_TCP, ext: r.ext ?? 0, states: r.states });
  if (!r.sports?.length) return head;
  return Buffer.concat([head, encodeAttr(INET_DIAG_REQ_BYTECODE, sportBytecode(r.sports))]);
}

/** Decodes one SOCK_DIAG_BY_FAMILY reply (struct inet_diag_msg + INET_DIAG_* attributes). */
export function decodeInetDiagMsg(payload: Buffer): InetDiagSocket {
  const m = inetDiagMsg.decode(payload);
  const v6 = m.family === AF_INET6;
  const cookie = ((BigInt(m.cookieHi) << 32n) | BigInt(m.cookieLo)).toString(16);
  return {
    family: m.family,
    state: m.state,
    timer: m.timer,
    retrans: m.retrans,
    sport: m.sport,
    dport: m.dport,
    src: v6 ? formatIpv6(m.src) : formatIpv4(m.src),
    dst: v6 ? formatIpv6(m.dst) : formatIpv4(m.dst),
    ifindex: m.if,
    cookie,
    expires: m.expires,
    rqueue: m.rqueue,
    wqueue: m.wqueue,
    uid: m.uid,
    inode: m.inode,
    attrs: inetDiagAttrs.decode(payload.subarray(inetDiagMsg.size)),
  };
}

function formatIpv4(b: Buffer): string {
  return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
}

/** RFC 5952 text, like inet_ntop(3) (and so like ss): longest zero run as `::`, IPv4-mapped as `::ffff:a.b.c.d`. */
export function formatIpv6(b: Buffer): string {
  if (b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) {
    return `::ffff:${formatIpv4(b.subarray(12, 16))}`;
  }
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push(b.readUInt16BE(i));
  let bestStart = -1;
  let bestLen = 1; // a single zero word is not compressed
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (ws: number[]) => ws.map((w) => w.toString(16)).join(':');
  if (bestStart < 0) return hex(words);
  return `${hex(words.slice(0, bestStart))}::${hex(words.slice(bestStart + bestLen))}`;
}

// ---------------------------------------------------------------------------
// Listeners
// ---------------------------------------------------------------------------

/** One listening TCP socket. Plain data (the cookie is a string), so it renders as JSON as it is. */
export interface Listener {
  family: InetFamily;
  /** Local address: `0.0.0.0` / `::` for a wildcard bind. */
  address: string;
  port: number;
  /** The socket's inode (what /proc/PID/fd links name `socket:[N]`). */
  inode: number;
  uid: number;
  /** The socket cookie in hex, as `ss -e` prints it after `sk:`: the socket's identity, never reused until reboot. */
  cookie: string;
  backlog: {
    /** Connections completed and waiting for accept() (idiag_rqueue of a listener). */
    queued: number;
    /** The listen() backlog, capped by net.core.somaxconn (idiag_wqueue of a listener). */
    max: number;
  };
  /** Device the socket is bound to (SO_BINDTODEVICE), 0 if none. */
  ifindex: number;
  /** IPv6 only: IPV6_V6ONLY. A wildcard IPv6 listener without it also accepts IPv4. */
  v6only?: boolean;
}

export function listenerFrom(s: InetDiagSocket): Listener {
  const l: Listener = {
    family: s.family === AF_INET6 ? 'ipv6' : 'ipv4',
    address: s.src,
    port: s.sport,
    inode: s.inode,
    uid: s.uid,
    cookie: s.cookie,
    backlog: { queued: s.rqueue, max: s.wqueue },
    ifindex: s.ifindex,
  };
  if (s.attrs.skv6only !== undefined) l.v6only = s.attrs.skv6only !== 0;
  return l;
}

/** `0.0.0.0:80`, `[::]:80`, with the cookie: how listeners appear in messages. */
export function describeListener(l: Listener): string {
  const addr = l.family === 'ipv6' ? `[${l.address}]` : l.address;
  return `${addr}:${l.port} sk:${l.cookie}`;
}

function checkPorts(ports: readonly number[]): number[] {
  for (const p of ports) {
    if (!Number.isInteger(p) || p < 1 || p > 65535) {
      throw new BadPortError(`invalid TCP port ${String(p)}: expected an integer from 1 to 65535`);
    }
  }
  return [...new Set(ports)];
}

function diagHint(family: InetFamily): (e: NetlinkError) => string | undefined {
  return (e) => {
    // sock_diag answers ENOENT when no handler is registered for the family/protocol.
    if (e.errno === 2) {
      return family === 'ipv6'
        ? 'this kernel has no IPv6 socket diagnostics (IPv6 disabled, or CONFIG_INET_DIAG without IPv6); pass families: ["ipv4"]'
        : 'this kernel lacks TCP socket diagnostics (CONFIG_INET_DIAG / CONFIG_INET_TCP_DIAG)';
    }
    if (e.errno === 22) return 'the kernel refused the socket filter bytecode';
    return undefined;
  };
}

export interface ListenerWatcherOptions {
  /** A network namespace: a name under /run/netns, or a path such as /proc/PID/ns/net. */
  netns?: string;
  /** Families to dump; both by default. */
  families?: InetFamily[];
}

/**
 * One open NETLINK_SOCK_DIAG socket, for polling listeners every millisecond
 * or so without reopening. Each list() is one dump per family, filtered in the
 * kernel by state (LISTEN only, so the established-socket table is not walked)
 * and by local port (bytecode). Each dump still walks every bucket of the
 * kernel's listening hash, which is most of its cost; the dumps run one after
 * the other (a netlink socket runs one dump at a time, and a socket per family
 * in parallel measured no faster).
 */
export class ListenerWatcher {
  readonly netns?: string;
  readonly families: readonly InetFamily[];
  private readonly sock: NetlinkSocket;
  /** Per state mask (list's, handshaking's), the request payloads for the last port set, since protect asks for the same ports every time. */
  private readonly cached = new Map<number, { key: string; wanted: Set<number>; requests: Buffer[] }>();

  private constructor(families: readonly InetFamily[], sock: NetlinkSocket, netns: string | undefined) {
    this.families = families;
    this.sock = sock;
    this.netns = netns;
  }

  static open(opts: ListenerWatcherOptions = {}): ListenerWatcher {
    const families: readonly InetFamily[] = opts.families?.length ? [...new Set(opts.families)] : ALL_FAMILIES;
    for (const f of families) {
      if (!Object.hasOwn(FAMILY_NUMBER, f)) {
        throw new ConfigError(`unknown address family "${String(f)}": expected ipv4 or ipv6`);
      }
    }
    const sock = NetlinkSocket.open(NETLINK_SOCK_DIAG, opts.netns !== undefined ? { netns: opts.netns } : {});
    return new ListenerWatcher(families, sock, opts.netns);
  }

  /**
   * TCP listeners on these local ports, IPv4 first, each family in the
   * kernel's order. An empty port list asks nothing and returns [].
   * Equivalent to: `ss -Hltne '( sport = :P1 or sport = :P2 )'`.
   *
   * Not a snapshot: the two families are two dumps, and a dump too large for
   * one batch resumes by position within a hash bucket, so a socket can be
   * missed if another in its bucket closes between batches. Kernel-side port
   * filtering keeps protect's dumps to one batch (measured on 6.18: a batch
   * holds ~30 listeners on a fresh socket, ~260 once the kernel has seen a
   * 32 KiB receive); a caller deciding on "gone" may still want the same
   * answer twice in a row.
   */
  async list(ports: readonly number[]): Promise<Listener[]> {
    const { key, wanted, requests } = this.requestsFor(TCPF_LISTEN, ports);
    if (requests.length === 0) return [];
    const out: Listener[] = [];
    for (let i = 0; i < requests.length; i++) {
      for (const s of await this.dump(i, requests[i]!, `state listening sport ${key}`)) {
        // The kernel already filtered; this guards against a kernel that ignored the bytecode.
        if (s.state === TCP_LISTEN && wanted.has(s.sport)) out.push(listenerFrom(s));
      }
    }
    return out;
  }

  /**
   * How many connections to these local ports are mid-handshake (SYN received, SYN-ACK sent, the
   * client's ACK not yet in): the kernel's request sockets, which belong to a listener but are in
   * no accept queue yet. A listener that closes with some resets them when tcp_migrate_req is off.
   * Equivalent to: `ss -Htn state syn-recv '( sport = :P1 or ... )' | wc -l`.
   *
   * This dump walks the kernel's established hash (every bucket, skipping other states cheaply),
   * not the listening one: dearer than list() (ms under a load of short connections, whose
   * TIME_WAIT sockets fill that hash), and once per family, so only asked for while a hold waits on
   * it, and only for `families` (a request socket has its listener's family).
   */
  async handshaking(ports: readonly number[], families: readonly InetFamily[] = this.families): Promise<number> {
    const { key, wanted, requests } = this.requestsFor(TCPF_SYN_RECV, ports);
    let n = 0;
    for (let i = 0; i < requests.length; i++) {
      if (!families.includes(this.families[i]!)) continue;
      for (const s of await this.dump(i, requests[i]!, `state syn-recv sport ${key}`)) if (s.state === TCP_SYN_RECV && wanted.has(s.sport)) n++;
    }
    return n;
  }

  /** One dump request per family for sockets in `states` on these local ports (none for no port), kept for the next call with the same ports. */
  private requestsFor(states: number, ports: readonly number[]): { key: string; wanted: Set<number>; requests: Buffer[] } {
    const key = ports.join(',');
    let c = this.cached.get(states);
    if (c?.key !== key) {
      const unique = checkPorts(ports);
      const requests = unique.length ? this.families.map((f) => encodeInetDiagRequest({ family: FAMILY_NUMBER[f], states, sports: unique })) : [];
      c = { key, wanted: new Set(unique), requests };
      this.cached.set(states, c);
    }
    return c;
  }

  /** Every TCP listener in the namespace. Equivalent to: `ss -Hltne`. */
  async listAll(): Promise<Listener[]> {
    const out: Listener[] = [];
    for (let i = 0; i < this.families.length; i++) {
      const req = encodeInetDiagRequest({ family: FAMILY_NUMBER[this.families[i]!], states: TCPF_LISTEN });
      for (const s of await this.dump(i, req, 'state listening')) if (s.state === TCP_LISTEN) out.push(listenerFrom(s));
    }
    return out;
  }

  /** One dump of family i; `what` names it in errors, in ss's words (`state listening sport 80`). */
  private async dump(i: number, payload: Buffer, what: string): Promise<InetDiagSocket[]> {
    const family = this.families[i]!;
    const object = `tcp ${family} ${what}${this.netns ? ` netns ${this.netns}` : ''}`;
    const replies = await this.sock.dumpConsistent(SOCK_DIAG_BY_FAMILY, payload, {
      op: 'SOCK_DIAG_BY_FAMILY',
      object,
      hint: diagHint(family),
    });
    const out: InetDiagSocket[] = [];
    for (const m of replies) if (m.type === SOCK_DIAG_BY_FAMILY) out.push(decodeInetDiagMsg(m.payload));
    return out;
  }

  /**
   * Calls `onGone` as soon as the kernel frees one of these sockets (by cookie),
   * from sock_diag's destroy notifications (the multicast groups `ss -E` reads:
   * SKNLGRP_INET_TCP_DESTROY, SKNLGRP_INET6_TCP_DESTROY), so "the old listener
   * is gone" is seen when it happens instead of at the next poll. An accelerator
   * only: the groups carry every TCP socket freed in the namespace, and under a
   * flood the socket's buffer can overflow (ENOBUFS) and lose one, so callers
   * still poll. Returns the unsubscribe; undefined when the kernel refuses the
   * groups (no CAP_NET_ADMIN, a kernel before 4.9).
   * Equivalent to: `ss -E -t` filtered by `sk:COOKIE`.
   */
  watchDestroyed(cookies: ReadonlySet<string>, onGone: (s: InetDiagSocket) => void): (() => void) | undefined {
    if (cookies.size === 0) return undefined;
    let sock: NetlinkSocket;
    try {
      sock = NetlinkSocket.open(NETLINK_SOCK_DIAG, this.netns !== undefined ? { netns: this.netns } : {});
    } catch {
      return undefined;
    }
    try {
      for (const f of this.families) sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, f === 'ipv4' ? SKNLGRP_INET_TCP_DESTROY : SKNLGRP_INET6_TCP_DESTROY);
    } catch {
      sock.close();
      return undefined;
    }
    sock.onUnsolicited((m) => {
      if (m.type !== SOCK_DIAG_BY_FAMILY) return;
      let s: InetDiagSocket;
      try {
        s = decodeInetDiagMsg(m.payload);
      } catch {
        return; // not ours to judge: the poll still sees the truth
      }
      if (cookies.has(s.cookie)) onGone(s);
    });
    return () => sock.close();
  }

  close(): void {
    this.sock.close();
  }
}

/** setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group) and sock_diag's groups (include/uapi/linux/sock_diag.h). */
const SOL_NETLINK = 270;
const NETLINK_ADD_MEMBERSHIP = 1;
export const SKNLGRP_INET_TCP_DESTROY = 1;
export const SKNLGRP_INET6_TCP_DESTROY = 3;

/**
 * TCP listeners on the given ports, with a socket opened and closed for this
 * one call (use ListenerWatcher to poll). Equivalent to: `ss -Hltne '( sport = :P1 or ... )'`.
 */
export async function listListeners(opts: { ports: number[]; netns?: string; families?: InetFamily[] }): Promise<Listener[]> {
  const w = ListenerWatcher.open(opts);
  try {
    return await w.list(opts.ports);
  } finally {
    w.close();
  }
}

// ---------------------------------------------------------------------------
// When is a reload done?
// ---------------------------------------------------------------------------

export interface SettleResult {
  settled: boolean;
  /** One clause per port, e.g. `port 80: old listener 0.0.0.0:80 sk:1f still open`. */
  reason: string;
  /** Ports not settled yet, ascending. */
  waiting: number[];
}

/**
 * Whether a reload has visibly replaced the listeners, port by port. A socket's
 * identity is its cookie (ss's `sk:`), never reused until reboot; inode and
 * address play no part.
 *
 * For each protected port:
 * - it had listeners in `before`: settled when `now` has at least one listener
 *   whose cookie was not in `before`, and none of the `before` listeners remain;
 * - it had none: settled when one appears.
 * The whole is settled when every port is. `ports` are the protected ports;
 * without it, the ports found in `before` and `now` (so pass it whenever a
 * port may have no listener before the reload).
 *
 * Edge cases, by design:
 * - fd hand-over (`haproxy -x`, systemd socket activation, nginx's binary
 *   upgrade or HUP) keeps the same sockets, so the rule never settles; the
 *   caller must fall back to the reload command's exit.
 * - `before` must be taken before the reload starts: a new listener already in
 *   `before` is not new, and the rule then waits forever.
 * - Overlap (old and new both listening, SO_REUSEPORT) is not settled: the old
 *   socket still takes its share of SYNs until it closes.
 * - A gap (old gone, no new one yet) is not settled: SYNs meet no listener.
 * - The rule is per port, not per address or family: a new IPv4-only listener
 *   replacing old IPv4 and IPv6 ones settles the port.
 * - "Accepting" means in LISTEN state (the kernel completes handshakes into
 *   the accept queue); whether the process calls accept() shows in
 *   backlog.queued, which this rule does not judge.
 * - No protected port at all: not settled (nothing to wait for is a caller bug).
 */
export function reloadSettled(before: readonly Listener[], now: readonly Listener[], ports?: readonly number[]): SettleResult {
  const portSet = [...new Set(ports ?? [...before, ...now].map((l) => l.port))].sort((a, b) => a - b);
  if (portSet.length === 0) return { settled: false, reason: 'no protected port', waiting: [] };
  const clauses: string[] = [];
  const waiting: number[] = [];
  for (const port of portSet) {
    const old = before.filter((l) => l.port === port);
    const cur = now.filter((l) => l.port === port);
    const oldIds = new Set(old.map((l) => l.cookie));
    const fresh = cur.filter((l) => !oldIds.has(l.cookie));
    const remaining = cur.filter((l) => oldIds.has(l.cookie));
    const list = (ls: Listener[]) => ls.map(describeListener).join(', ');
    if (old.length === 0) {
      if (fresh.length > 0) clauses.push(`port ${port}: listener appeared (${list(fresh)})`);
      else {
        waiting.push(port);
        clauses.push(`port ${port}: no listener yet`);
      }
      continue;
    }
    if (fresh.length > 0 && remaining.length === 0) {
      clauses.push(`port ${port}: ${list(fresh)} replaced ${old.length} old listener${old.length > 1 ? 's' : ''}`);
      continue;
    }
    waiting.push(port);
    if (fresh.length === 0 && remaining.length === 0) {
      clauses.push(`port ${port}: old listener${old.length > 1 ? 's' : ''} gone, no new listener yet`);
    } else if (fresh.length === 0) {
      clauses.push(
        remaining.length === old.length
          ? `port ${port}: same sockets as before (${list(remaining)}); no new listener yet` +
              ' (a reload that hands its sockets over, such as haproxy -x, never shows one)'
          : `port ${port}: no new listener yet; ${remaining.length} of ${old.length} old still open (${list(remaining)})`,
      );
    } else {
      clauses.push(`port ${port}: new ${list(fresh)} up, old ${list(remaining)} still open`);
    }
  }
  return { settled: waiting.length === 0, reason: clauses.join('; '), waiting };
}
