/**
 * nfnetlink_queue (net/netfilter/nfnetlink_queue.c, include/uapi/linux/netfilter/nfnetlink_queue.h):
 * a netfilter queue bound in-process over NETLINK_NETFILTER, used to hold SYNs
 * on kernels without sch_plug. An iptables rule (`-j NFQUEUE --queue-num N
 * --queue-bypass`, see src/netfilter/rules.ts) sends the SYNs here; we give no
 * verdict while holding and accept them all with one batch verdict on release.
 *
 * Kernel facts that shape this module (checked against the kernel source and
 * measured in test/kernel/nfqueue.test.ts):
 * - Every NFQA payload field is big-endian, including the u32 attributes.
 * - One socket per queue: binding a queue another socket holds answers EPERM
 *   (the same errno as a missing CAP_NET_ADMIN; bind() tells them apart), binding
 *   it again from the same socket EBUSY.
 *   NFQNL_CFG_CMD_PF_BIND/PF_UNBIND are no-ops since Linux 3.8; we never send them.
 * - Packet messages carry nlmsg_seq 0, so NetlinkSocket hands them to the
 *   unsolicited handler. Ids come from a per-queue counter starting at 1, are
 *   assigned and sent to the socket under the queue lock, so they arrive in order.
 * - VERDICT_BATCH accepts every queued entry whose id is not after the given id
 *   (serial-number order); with nothing queued it answers ENOENT.
 * - A SYN queued at raw PREROUTING has left its socket (loopback orphans the skb,
 *   remote ones never had it), so the client's retransmissions are not skipped
 *   and arrive as more queued SYNs: on this 6.18 kernel (tcp_syn_linear_timeouts=4)
 *   one per second held, per client. They go with the same batch verdict; the
 *   listener takes the copies for SYN retransmissions. (Queued at raw OUTPUT, a
 *   local SYN keeps its socket and the kernel skips the retransmissions,
 *   TCPSpuriousRtxHostQueues - measured, not used: OUTPUT sees local clients only.)
 * - When the socket closes (close(), exit, kill -9) or the queue is unbound, the
 *   kernel destroys the instance and DROPS whatever it still holds: each client
 *   connects with its next SYN retransmission, through the rule's bypass, with no
 *   RST (measured: kill -9 after 0.3 s of hold, connected at 1.0 s; after 1.5 s,
 *   at 2.0 s). That is why unbind() accepts everything first.
 * - Overflow: when queue_total reaches the max length, the kernel drops the packet
 *   and counts it in queue_dropped, or with NFQA_CFG_F_FAIL_OPEN accepts it
 *   uncounted. A message the socket cannot take (receive buffer full) is likewise
 *   dropped (queue_user_dropped) or accepted with FAIL_OPEN; it never becomes a
 *   queued packet we do not know about.
 *
 * Release without loss: a batch verdict covers only ids we have seen, and unbinding
 * drops the rest, so release first turns the queue into a pass-through - FAIL_OPEN
 * on, then max length 0, so the kernel accepts every new packet itself - and only
 * then sends the batch verdict. The max-length change is made under the queue
 * lock, after which no packet can be queued, and every packet queued before it
 * had its message put on our socket before the ACK of that change; so when the
 * ACK arrives we have seen every id there is to accept.
 */
import { KernelReplyError, SynholdError } from '../model/errors.js';
import { EncodeError, NetlinkError, type ErrorHint } from '../netlink/errors.js';
import { NLMSG_ERROR, NLM_F_ACK, NLM_F_REQUEST, decodeAck, encodeMessage, type NetlinkMessage } from '../netlink/message.js';
import { defineAttributes, defineStruct, type AttrValues } from '../netlink/schema.js';
import { NETLINK_NETFILTER, NETLINK_NO_ENOBUFS, NetlinkSocket, SOL_NETLINK } from '../netlink/socket.js';
import { AF_UNSPEC, NF_ACCEPT, NF_DROP, NFNETLINK_V0, NFNL_SUBSYS_QUEUE, nfgenmsg, nfnlMsgType } from '../netfilter/nfnetlink.js';
import { parsePacketHeaders, type PacketHeaders } from './packet.js';
import { readKernelQueueStats, type KernelQueueStats } from './proc.js';

// enum nfqnl_msg_types
export const NFQNL_MSG_PACKET = 0;
export const NFQNL_MSG_VERDICT = 1;
export const NFQNL_MSG_CONFIG = 2;
export const NFQNL_MSG_VERDICT_BATCH = 3;

// enum nfqnl_msg_config_cmds
export const NFQNL_CFG_CMD_NONE = 0;
export const NFQNL_CFG_CMD_BIND = 1;
export const NFQNL_CFG_CMD_UNBIND = 2;

// enum nfqnl_config_mode
export const NFQNL_COPY_NONE = 0;
export const NFQNL_COPY_META = 1;
export const NFQNL_COPY_PACKET = 2;

// NFQA_CFG_FLAGS bits
export const NFQA_CFG_F_FAIL_OPEN = 1 << 0;
export const NFQA_CFG_F_CONNTRACK = 1 << 1;
export const NFQA_CFG_F_GSO = 1 << 2;
export const NFQA_CFG_F_UID_GID = 1 << 3;
export const NFQA_CFG_F_SECCTX = 1 << 4;

/** NFQNL_QMAX_DEFAULT in the kernel: the max length a freshly bound queue gets. */
export const NFQNL_QMAX_DEFAULT = 1024;

// NF_INET_* hooks, as reported in nfqnl_msg_packet_hdr.hook
export const NF_INET_PRE_ROUTING = 0;
export const NF_INET_LOCAL_IN = 1;
export const NF_INET_FORWARD = 2;
export const NF_INET_LOCAL_OUT = 3;
export const NF_INET_POST_ROUTING = 4;

/** struct nfqnl_msg_packet_hdr (packed, 7 bytes) */
export const nfqnlMsgPacketHdr = defineStruct('nfqnl_msg_packet_hdr', [
  ['packetId', 'be32'],
  ['hwProtocol', 'be16'],
  ['hook', 'u8'],
] as const);

/** struct nfqnl_msg_verdict_hdr */
export const nfqnlMsgVerdictHdr = defineStruct('nfqnl_msg_verdict_hdr', [
  ['verdict', 'be32'],
  ['id', 'be32'],
] as const);

/** struct nfqnl_msg_config_cmd */
export const nfqnlMsgConfigCmd = defineStruct('nfqnl_msg_config_cmd', [
  ['command', 'u8'],
  ['pad', 'u8'],
  /** AF_xxx, used only by the obsolete PF_BIND/PF_UNBIND. */
  ['pf', 'be16'],
] as const);

/** struct nfqnl_msg_config_params (packed, 5 bytes) */
export const nfqnlMsgConfigParams = defineStruct('nfqnl_msg_config_params', [
  ['copyRange', 'be32'],
  ['copyMode', 'u8'],
] as const);

/** enum nfqnl_attr_config: attributes of NFQNL_MSG_CONFIG. */
export const nfqaCfgAttrs = defineAttributes('nfqnl_attr_config', {
  cmd: { type: 1, kind: 'struct', struct: nfqnlMsgConfigCmd },
  params: { type: 2, kind: 'struct', struct: nfqnlMsgConfigParams },
  queueMaxlen: { type: 3, kind: 'be32' },
  /** Which NFQA_CFG_F_* bits `flags` changes; required with `flags`. */
  mask: { type: 4, kind: 'be32' },
  flags: { type: 5, kind: 'be32' },
});

/** enum nfqnl_attr_type: attributes of NFQNL_MSG_PACKET and NFQNL_MSG_VERDICT(_BATCH). */
export const nfqaAttrs = defineAttributes('nfqnl_attr_type', {
  packetHdr: { type: 1, kind: 'struct', struct: nfqnlMsgPacketHdr },
  verdictHdr: { type: 2, kind: 'struct', struct: nfqnlMsgVerdictHdr },
  mark: { type: 3, kind: 'be32' },
  /** struct nfqnl_msg_packet_timestamp { __aligned_be64 sec, usec; } */
  timestamp: { type: 4, kind: 'binary' },
  ifindexIndev: { type: 5, kind: 'be32' },
  ifindexOutdev: { type: 6, kind: 'be32' },
  ifindexPhysindev: { type: 7, kind: 'be32' },
  ifindexPhysoutdev: { type: 8, kind: 'be32' },
  /** struct nfqnl_msg_packet_hw */
  hwaddr: { type: 9, kind: 'binary' },
  /** The packet from its network header, cut to the copy range. */
  payload: { type: 10, kind: 'binary' },
  ct: { type: 11, kind: 'binary' },
  ctInfo: { type: 12, kind: 'be32' },
  /** The packet's full length; present only when the payload was cut. */
  capLen: { type: 13, kind: 'be32' },
  skbInfo: { type: 14, kind: 'be32' },
  exp: { type: 15, kind: 'binary' },
  uid: { type: 16, kind: 'be32' },
  gid: { type: 17, kind: 'be32' },
  secctx: { type: 18, kind: 'string' },
  vlan: { type: 19, kind: 'binary' },
  l2hdr: { type: 20, kind: 'binary' },
  priority: { type: 21, kind: 'be32' },
});

export type NfqaCfgValues = AttrValues<typeof nfqaCfgAttrs.spec>;
export type NfqaValues = AttrValues<typeof nfqaAttrs.spec>;

// ---------------------------------------------------------------------------
// Codec: messages as bytes (nlmsg payloads, i.e. without struct nlmsghdr)
// ---------------------------------------------------------------------------

function body(queue: number, attrs: Buffer): Buffer {
  return Buffer.concat([nfgenmsg.encode({ family: AF_UNSPEC, version: NFNETLINK_V0, resId: queue }), attrs]);
}

export const NFQNL_TYPE_PACKET = nfnlMsgType(NFNL_SUBSYS_QUEUE, NFQNL_MSG_PACKET);
export const NFQNL_TYPE_VERDICT = nfnlMsgType(NFNL_SUBSYS_QUEUE, NFQNL_MSG_VERDICT);
export const NFQNL_TYPE_CONFIG = nfnlMsgType(NFNL_SUBSYS_QUEUE, NFQNL_MSG_CONFIG);
export const NFQNL_TYPE_VERDICT_BATCH = nfnlMsgType(NFNL_SUBSYS_QUEUE, NFQNL_MSG_VERDICT_BATCH);

/** NFQNL_MSG_CONFIG payload for queue `queue`. Attributes go out in the order of `cfg`'s keys. */
export function encodeConfig(queue: number, cfg: NfqaCfgValues): Buffer {
  return body(queue, nfqaCfgAttrs.encode(cfg));
}

/**
 * A release as whole requests, for a process that has the bound socket but not
 * this object (the hold's watchdog): FAIL_OPEN, then max length 0 (see acceptAll
 * for the order), a batch ACCEPT of every id there can be (ids restart at 1 with
 * each bind, so 0x7fffffff is "after" all of them in serial order), then UNBIND.
 * Each step is harmless if already done; the batch answers ENOENT when nothing is queued.
 */
export function encodeReleaseRequests(queue: number, seq: () => number): Buffer[] {
  const flags = NLM_F_REQUEST | NLM_F_ACK;
  return [
    encodeMessage({ type: NFQNL_TYPE_CONFIG, flags, seq: seq(), payload: encodeConfig(queue, { mask: NFQA_CFG_F_FAIL_OPEN, flags: NFQA_CFG_F_FAIL_OPEN }) }),
    encodeMessage({ type: NFQNL_TYPE_CONFIG, flags, seq: seq(), payload: encodeConfig(queue, { queueMaxlen: 0 }) }),
    encodeMessage({ type: NFQNL_TYPE_VERDICT_BATCH, flags, seq: seq(), payload: encodeVerdict(queue, NF_ACCEPT, 0x7fffffff) }),
    encodeMessage({ type: NFQNL_TYPE_CONFIG, flags, seq: seq(), payload: encodeConfig(queue, { cmd: { command: NFQNL_CFG_CMD_UNBIND, pad: 0, pf: 0 } }) }),
  ];
}

/** The payload of NFQNL_MSG_VERDICT (packet `id`) or NFQNL_MSG_VERDICT_BATCH (every queued id up to `id`): the type says which. */
export function encodeVerdict(queue: number, verdict: number, id: number): Buffer {
  return body(queue, nfqaAttrs.encode({ verdictHdr: { verdict, id } }));
}

/** A queued packet as the kernel described it. */
export interface NfqPacket {
  queue: number;
  id: number;
  /** NF_INET_* hook the packet was queued from (0 = PRE_ROUTING). */
  hook: number;
  /** Ethertype in host order (0x0800 IPv4, 0x86dd IPv6). */
  hwProtocol: number;
  indev?: number;
  outdev?: number;
  mark?: number;
  /** Bytes copied to us (bounded by the copy range). */
  payloadLength: number;
  /** The packet's full length when it was cut, else equal to payloadLength. */
  length: number;
  /** Addresses, ports and TCP flags, when the copy range allowed. */
  headers?: PacketHeaders;
  /** Every attribute as decoded, unknown ones raw. */
  attrs: NfqaValues;
}

/** Decodes an NFQNL_MSG_PACKET nlmsg payload. Throws DecodeError on malformed bytes. */
export function decodePacket(payload: Buffer): NfqPacket {
  const gen = nfgenmsg.decode(payload, 0);
  const attrs = nfqaAttrs.decode(payload.subarray(nfgenmsg.size));
  const hdr = attrs.packetHdr;
  if (!hdr) throw new KernelReplyError(`NFQNL_MSG_PACKET for queue ${gen.resId} without NFQA_PACKET_HDR`);
  const payloadLength = attrs.payload?.length ?? 0;
  const p: NfqPacket = {
    queue: gen.resId,
    id: hdr.packetId,
    hook: hdr.hook,
    hwProtocol: hdr.hwProtocol,
    payloadLength,
    length: attrs.capLen ?? payloadLength,
    attrs,
  };
  if (attrs.ifindexIndev !== undefined) p.indev = attrs.ifindexIndev;
  if (attrs.ifindexOutdev !== undefined) p.outdev = attrs.ifindexOutdev;
  if (attrs.mark !== undefined) p.mark = attrs.mark;
  const headers = parsePacketHeaders(attrs.payload);
  if (headers) p.headers = headers;
  return p;
}

// ---------------------------------------------------------------------------
// The holder
// ---------------------------------------------------------------------------

export interface NfQueueOptions {
  /** Queue number, as in `iptables -j NFQUEUE --queue-num N` (0..65535). */
  queue: number;
  /** A network namespace: a name under /run/netns or a path such as /proc/PID/ns/net. */
  netns?: string;
  /** Packets the kernel queues before overflowing (NFQA_CFG_QUEUE_MAXLEN). Default 1024, the kernel's. */
  maxLen?: number;
  /**
   * Bytes of each packet copied to us. Default 128: enough for IPv4/IPv6 + TCP
   * headers with options, so onPacket can say who connects. 0 copies metadata only.
   */
  copyRange?: number;
  /**
   * What the kernel does with a packet when the queue is full: false (default)
   * drops it (counted in queue_dropped; the client retransmits its SYN after 1 s
   * and is served, late but without an error); true accepts it at once, which in
   * the middle of a reload may hit a closed listener and be reset. A held SYN
   * that is late is better than one that is refused, so holding fails closed.
   */
  failOpen?: boolean;
  /**
   * SO_RCVBUF (the kernel doubles it). Default 4 MiB. The native socket sets
   * SO_RCVBUF, which net.core.rmem_max caps (4 MiB on this project's machines, often
   * 208 KiB elsewhere); overflow is not fatal either way (see the module comment).
   * The socket holds at most max-length packet messages (a queued packet has
   * exactly one), each well under 2 KiB with the default copy range; so 4 MiB
   * (8 MiB effective) leaves room for ~4000 pending messages if the event loop stalls.
   */
  rcvbuf?: number;
  /** Start holding at once (default true); false binds in pass-through and waits for hold(). */
  hold?: boolean;
  /** Called for every packet the kernel queues to us (after it is counted as held). */
  onPacket?: (p: NfqPacket) => void;
}

export interface NfQueueStats {
  /** Packet messages received since bind. */
  received: number;
  /** Packets held now (received, no verdict yet). */
  held: number;
  /** The most held at once. */
  maxHeld: number;
  /** Packets accepted by our verdicts. */
  accepted: number;
  /** Batch verdicts sent. */
  batches: number;
  /** The last packet id the kernel gave us (0 before the first). */
  lastPacketId: number;
  /** Messages we could not use: undecodable, or for another queue. */
  strays: number;
  /** Error replies that matched no request. */
  unsolicitedErrors: number;
}

/** Misuse of an NfQueue: an operation after unbind() or close(). */
export class NfQueueStateError extends SynholdError {
  constructor(queue: number, op: string, state: string) {
    super('ERR_NFQUEUE_STATE', `nfqueue ${queue}: cannot ${op}: the queue is ${state}`);
  }
}

const DEFAULT_COPY_RANGE = 128;
const DEFAULT_RCVBUF = 4 * 1024 * 1024;

function checkInt(what: string, v: number, lo: number, hi: number): void {
  if (!Number.isInteger(v) || v < lo || v > hi) throw new EncodeError(what, `${String(v)} is not an integer in ${lo}..${hi}`);
}

function bindHint(queue: number) {
  return (e: NetlinkError): ErrorHint | undefined => {
    switch (e.errnoName) {
      case 'EBUSY':
        return `queue ${queue} is already bound by this socket`;
      case 'EPERM':
        // The kernel answers EPERM both to a process without CAP_NET_ADMIN and to a
        // bind of a queue that another socket holds; bind() tells them apart from /proc.
        return 'binding a netfilter queue needs CAP_NET_ADMIN';
      case 'EACCES':
        return 'binding a netfilter queue needs CAP_NET_ADMIN';
      case 'EOPNOTSUPP':
      case 'EPROTONOSUPPORT':
        return {
          text: 'this kernel lacks nfnetlink_queue (CONFIG_NETFILTER_NETLINK_QUEUE): load it (modprobe nfnetlink_queue; in the kernel lab, insmod its .ko)',
          lacks: 'nfnetlink_queue',
        };
      default:
        return undefined;
    }
  };
}

function verdictHint(queue: number) {
  return (e: NetlinkError): string | undefined => {
    switch (e.errnoName) {
      case 'ENODEV':
        return `queue ${queue} is not bound (any more)`;
      case 'EPERM':
        return `queue ${queue} is bound by another socket`;
      default:
        return undefined;
    }
  };
}

/** EPERM on bind: if /proc shows the queue bound to another port id, say so (with it) instead of blaming privileges. */
async function explainBindError(e: unknown, opts: NfQueueOptions): Promise<unknown> {
  if (!(e instanceof NetlinkError) || e.errnoName !== 'EPERM') return e;
  try {
    const line = (await readKernelQueueStats(opts.netns)).find((s) => s.queue === opts.queue);
    if (line) {
      return e.withContext(
        undefined,
        `queue ${opts.queue} is already bound by another socket (peer_portid ${line.peerPortId} in /proc/net/netfilter/nfnetlink_queue); one holder per queue`,
      );
    }
  } catch {
    // Keep the privilege hint.
  }
  return e;
}

type State = 'opened' | 'bound' | 'unbound' | 'closed';

/**
 * One bound netfilter queue. Equivalent, in spirit, to libnetfilter_queue's
 * nfq_create_queue + nfq_set_mode + nfq_set_queue_maxlen, with verdicts kept
 * back until acceptAll().
 */
export class NfQueue {
  readonly queue: number;
  readonly netns?: string;
  readonly maxLen: number;
  readonly copyRange: number;
  readonly failOpen: boolean;
  private readonly sock: NetlinkSocket;
  private readonly onPacket?: (p: NfqPacket) => void;
  private state: State = 'opened';
  private opts!: NfQueueOptions;
  private holdingNow = false;
  private heldCount = 0;
  private maxIdSeen = 0;
  private readonly counters: NfQueueStats = {
    received: 0,
    held: 0,
    maxHeld: 0,
    accepted: 0,
    batches: 0,
    lastPacketId: 0,
    strays: 0,
    unsolicitedErrors: 0,
  };
  /** Serializes configuration and verdict requests. */
  private chain: Promise<unknown> = Promise.resolve();

  private constructor(sock: NetlinkSocket, opts: NfQueueOptions) {
    this.sock = sock;
    this.queue = opts.queue;
    this.netns = opts.netns;
    this.maxLen = opts.maxLen ?? NFQNL_QMAX_DEFAULT;
    this.copyRange = opts.copyRange ?? DEFAULT_COPY_RANGE;
    this.failOpen = opts.failOpen ?? false;
    if (opts.onPacket) this.onPacket = opts.onPacket;
  }

  /**
   * Opens NETLINK_NETFILTER (in `netns` if given), binds the queue and, unless
   * `hold: false`, starts holding: from here every packet the iptables rule sends
   * to this queue waits for acceptAll(). One request:
   * NFQNL_MSG_CONFIG { CMD BIND, PARAMS copy mode/range, QUEUE_MAXLEN, FLAGS/MASK };
   * with `hold: false`, followed by the release's (see acceptAll).
   */
  static async bind(opts: NfQueueOptions): Promise<NfQueue> {
    const q = NfQueue.open(opts);
    await q.bindQueue(opts.hold !== false);
    return q;
  }

  /**
   * Opens NETLINK_NETFILTER (in `netns` if given) without binding: the socket
   * exists, so its fd can be handed to a watchdog before the queue holds
   * anything (src/protect/hold/). Then bindQueue().
   */
  static open(opts: NfQueueOptions): NfQueue {
    checkInt('nfqueue queue', opts.queue, 0, 0xffff);
    if (opts.maxLen !== undefined) checkInt('nfqueue maxLen', opts.maxLen, 1, 0xffffffff);
    if (opts.copyRange !== undefined) checkInt('nfqueue copyRange', opts.copyRange, 0, 0xffff);
    const sock = NetlinkSocket.open(NETLINK_NETFILTER, {
      netns: opts.netns,
      rcvbuf: opts.rcvbuf ?? DEFAULT_RCVBUF,
    });
    try {
      // Without NO_ENOBUFS a full receive buffer would make the next recv fail with
      // ENOBUFS, and NetlinkSocket would fail the request in flight (say, the release's
      // batch verdict, which the kernel may well have applied). The kernel already
      // accounts for what it could not deliver (queue_user_dropped), so we take that
      // count from /proc instead of an error that carries no information.
      sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1);
    } catch (e) {
      sock.close();
      throw e;
    }
    const q = new NfQueue(sock, opts);
    q.opts = opts;
    sock.onUnsolicited((m) => q.onMessage(m));
    return q;
  }

  /**
   * Binds the queue and, if `hold`, starts holding: from here every packet the
   * iptables rule sends to this queue waits for acceptAll(). One request:
   * NFQNL_MSG_CONFIG { CMD BIND, PARAMS copy mode/range, QUEUE_MAXLEN, FLAGS/MASK };
   * without `hold`, followed by the release's (see acceptAll). On failure the socket is closed.
   */
  async bindQueue(hold = true): Promise<void> {
    if (this.state !== 'opened') throw new NfQueueStateError(this.queue, 'bind', this.state);
    try {
      await this.sock.request(
        NFQNL_TYPE_CONFIG,
        encodeConfig(this.queue, {
          cmd: { command: NFQNL_CFG_CMD_BIND, pad: 0, pf: 0 },
          params: { copyRange: this.copyRange, copyMode: this.copyRange > 0 ? NFQNL_COPY_PACKET : NFQNL_COPY_META },
          queueMaxlen: this.maxLen,
          mask: NFQA_CFG_F_FAIL_OPEN,
          flags: this.failOpen ? NFQA_CFG_F_FAIL_OPEN : 0,
        }),
        { op: 'NFQNL_MSG_CONFIG', object: `queue ${this.queue} bind`, hint: bindHint(this.queue) },
      );
      this.state = 'bound';
      this.setHolding(true);
      // Pass-through from the start goes the same way as a release, so that a packet
      // queued in between is accepted rather than forgotten.
      if (!hold) await this.acceptAll();
    } catch (e) {
      this.close();
      throw await explainBindError(e, this.opts);
    }
  }

  /** A sequence number of this socket's, for a request encoded now and sent later by another process. */
  reserveSeq(): number {
    return this.sock.reserveSeq();
  }

  /** Acknowledgements of reserved requests that we read (see NetlinkSocket.onReservedAck). */
  onReservedAck(listener: ((seq: number, error: number) => void) | undefined): void {
    this.sock.onReservedAck(listener);
  }

  /** The socket's file descriptor (inherited by a watchdog: verdicts must come from the socket that bound the queue). */
  get fd(): number {
    return this.sock.fd;
  }

  /** The socket's netlink port id: the peer_portid column of /proc/net/netfilter/nfnetlink_queue. */
  get portId(): number {
    return this.sock.portId;
  }

  /** Whether new packets are being held (true) or passed by the kernel itself (false). */
  get holding(): boolean {
    return this.holdingNow;
  }

  /** Packets held right now. */
  held(): number {
    return this.heldCount;
  }

  get stats(): NfQueueStats {
    return { ...this.counters, held: this.heldCount };
  }

  /** This queue's line of /proc/net/netfilter/nfnetlink_queue, or undefined when it is not bound. */
  async kernelStats(): Promise<KernelQueueStats | undefined> {
    return (await readKernelQueueStats(this.netns)).find((s) => s.queue === this.queue);
  }

  private setHolding(on: boolean): void {
    this.holdingNow = on;
    // Holding means packets wait on this process: keep it alive until released.
    this.sock.keepAlive(on);
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  private assertBound(op: string): void {
    if (this.state !== 'bound') throw new NfQueueStateError(this.queue, op, this.state);
  }

  private config(cfg: NfqaCfgValues, what: string): Promise<unknown> {
    return this.sock.request(NFQNL_TYPE_CONFIG, encodeConfig(this.queue, cfg), {
      op: 'NFQNL_MSG_CONFIG',
      object: `queue ${this.queue} ${what}`,
      hint: verdictHint(this.queue),
    });
  }

  private onMessage(m: NetlinkMessage): void {
    if (m.type === NFQNL_TYPE_PACKET) {
      let p: NfqPacket;
      try {
        p = decodePacket(m.payload);
      } catch {
        this.counters.strays++;
        return;
      }
      if (p.queue !== this.queue) {
        this.counters.strays++;
        return;
      }
      this.counters.received++;
      this.heldCount++;
      this.maxIdSeen = p.id;
      this.counters.lastPacketId = p.id;
      if (this.heldCount > this.counters.maxHeld) this.counters.maxHeld = this.heldCount;
      if (this.onPacket) {
        try {
          this.onPacket(p);
        } catch (e) {
          // A failing observer must not lose the packet's place in the hold.
          process.emitWarning(`nfqueue ${this.queue}: onPacket threw: ${(e as Error).message}`);
        }
      }
      return;
    }
    if (m.type === NLMSG_ERROR) {
      try {
        if (decodeAck(m).error !== 0) this.counters.unsolicitedErrors++;
      } catch {
        this.counters.strays++;
      }
      return;
    }
    this.counters.strays++;
  }

  /**
   * Holds new packets again after acceptAll() (or a bind with `hold: false`).
   * One request: NFQNL_MSG_CONFIG { QUEUE_MAXLEN maxLen, FLAGS/MASK fail-open as configured }.
   */
  hold(): Promise<void> {
    return this.serial(async () => {
      this.assertBound('hold');
      if (this.holdingNow) return;
      // Max length first, then the flag: in between, FAIL_OPEN with a real max
      // length only matters for a full queue, so no packet is treated wrongly.
      await this.config({ queueMaxlen: this.maxLen, mask: NFQA_CFG_F_FAIL_OPEN, flags: this.failOpen ? NFQA_CFG_F_FAIL_OPEN : 0 }, 'hold');
      this.setHolding(true);
    });
  }

  /**
   * Releases: new packets pass straight through (the kernel accepts them), and
   * everything held so far is accepted with one batch verdict. Nothing is lost in
   * between (see the module comment). Resolves with how many were accepted.
   * Three requests at most: FLAGS FAIL_OPEN; QUEUE_MAXLEN 0; VERDICT_BATCH ACCEPT id<=last.
   */
  acceptAll(): Promise<{ accepted: number }> {
    return this.serial(async () => {
      this.assertBound('accept');
      if (this.holdingNow) {
        // Two requests: the kernel applies QUEUE_MAXLEN before FLAGS within one
        // message, which would leave a moment of "full and fail-closed" (drops).
        if (!this.failOpen) await this.config({ mask: NFQA_CFG_F_FAIL_OPEN, flags: NFQA_CFG_F_FAIL_OPEN }, 'fail-open');
        await this.config({ queueMaxlen: 0 }, 'pass-through');
        this.setHolding(false);
      }
      return { accepted: await this.acceptUpTo(this.maxIdSeen) };
    });
  }

  /**
   * Accepts the held packets with ids up to `id` and keeps holding: one
   * VERDICT_BATCH, which the kernel applies walking its queue in order, so they
   * leave in the order they came. `count` is how many held packets that covers
   * (this class keeps no list of ids; the caller does). Resolves with how many
   * were accepted (0 when the kernel had none of them any more).
   */
  acceptThrough(id: number, count: number): Promise<number> {
    checkInt('nfqueue packet id', id, 1, 0xffffffff);
    checkInt('nfqueue accept count', count, 1, this.heldCount);
    return this.serial(async () => {
      this.assertBound('accept');
      return this.acceptUpTo(id, count);
    });
  }

  /**
   * Resolves once every packet the kernel queued before this call has been
   * handed to onPacket. A configuration request that changes nothing (the
   * fail-open flag set to what it is) takes the queue lock, under which each
   * packet's message is put on our socket; its ACK comes after all of them, and
   * the socket dispatches in order. A buffer's step uses it, so that "what is
   * held" means what the kernel holds, not what we have read so far.
   */
  barrier(): Promise<void> {
    return this.serial(async () => {
      this.assertBound('barrier');
      const flags = !this.holdingNow || this.failOpen ? NFQA_CFG_F_FAIL_OPEN : 0;
      await this.config({ mask: NFQA_CFG_F_FAIL_OPEN, flags }, 'barrier');
    });
  }

  private async acceptUpTo(id: number, n = this.heldCount): Promise<number> {
    if (n === 0) return 0;
    try {
      await this.sock.request(NFQNL_TYPE_VERDICT_BATCH, encodeVerdict(this.queue, NF_ACCEPT, id), {
        op: 'NFQNL_MSG_VERDICT_BATCH',
        object: `queue ${this.queue} accept id<=${id}`,
        hint: verdictHint(this.queue),
      });
    } catch (e) {
      // ENOENT: nothing of ours was queued any more (the kernel dropped entries
      // itself, e.g. their device went away). Nothing left to accept.
      if (!(e instanceof NetlinkError && e.errnoName === 'ENOENT')) throw e;
      this.heldCount -= n;
      return 0;
    }
    this.heldCount -= n;
    this.counters.accepted += n;
    this.counters.batches++;
    return n;
  }

  /**
   * A single verdict for one packet (NFQNL_MSG_VERDICT). The hold itself never
   * needs it; it is here for tools and tests that want to drop one SYN.
   */
  verdict(id: number, verdict: typeof NF_ACCEPT | typeof NF_DROP): Promise<void> {
    return this.serial(async () => {
      this.assertBound('verdict');
      await this.sock.request(NFQNL_TYPE_VERDICT, encodeVerdict(this.queue, verdict, id), {
        op: 'NFQNL_MSG_VERDICT',
        object: `queue ${this.queue} ${verdict === NF_ACCEPT ? 'accept' : 'drop'} id ${id}`,
        hint: verdictHint(this.queue),
      });
      if (this.heldCount > 0) this.heldCount--;
      if (verdict === NF_ACCEPT) this.counters.accepted++;
    });
  }

  /**
   * Accepts everything held (acceptAll), then unbinds: the iptables rule's
   * --queue-bypass lets packets through from here on. The socket stays open until close().
   */
  async unbind(): Promise<void> {
    if (this.state !== 'bound') return;
    await this.acceptAll();
    await this.serial(async () => {
      if (this.state !== 'bound') return;
      await this.config({ cmd: { command: NFQNL_CFG_CMD_UNBIND, pad: 0, pf: 0 } }, 'unbind');
      this.state = 'unbound';
      this.setHolding(false);
    });
  }

  /**
   * Closes the socket. If still bound, the kernel destroys the queue and DROPS
   * what it holds (like kill -9): call unbind() first for a clean release.
   */
  close(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.holdingNow = false;
    this.sock.keepAlive(false);
    this.sock.close();
  }
}
