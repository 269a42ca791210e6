/**
 * A netlink socket with request/reply matching by sequence number.
 *
 * Requests resolve on the kernel's ACK (NLMSG_ERROR with error 0) with any
 * replies that came before it; dumps resolve on NLMSG_DONE with every part;
 * batches (several messages in one datagram, nfnetlink's transactions) resolve
 * on the ACKs of the messages that asked for one. Messages that match no
 * outstanding request (NFQUEUE packets, multicast notifications) go to the
 * `unsolicited` handler.
 */
import { native, isNativeError, type NativeSocketHandle } from '../native/addon.js';
import { errnoName } from './errno.js';
import { DecodeError, DumpInterruptedError, NetlinkError, NetlinkTimeoutError, SocketError, type ErrorHint } from './errors.js';
import {
  NLMSG_DONE,
  NLMSG_ERROR,
  NLMSG_NOOP,
  NLMSG_OVERRUN,
  NLM_F_ACK,
  NLM_F_DUMP,
  NLM_F_DUMP_INTR,
  NLM_F_REQUEST,
  decodeAck,
  decodeDone,
  decodeMessages,
  encodeMessage,
  type NetlinkMessage,
} from './message.js';

export const NETLINK_ROUTE = 0;
export const NETLINK_SOCK_DIAG = 4;
export const NETLINK_NETFILTER = 12;

export const SOL_NETLINK = 270;
export const NETLINK_ADD_MEMBERSHIP = 1;
export const NETLINK_NO_ENOBUFS = 5;

export interface OpenOptions {
  /** A network namespace: a name under /run/netns, or a path such as /proc/PID/ns/net. */
  netns?: string;
  /** SO_RCVBUF in bytes; the kernel doubles it. NFQUEUE holders want a large one. */
  rcvbuf?: number;
}

export interface RequestOptions {
  /** Name of the operation for errors, e.g. `RTM_NEWQDISC`. */
  op: string;
  /** What the request is about, for errors, e.g. `dev lo parent 1:4 kind plug`. */
  object?: string;
  /** Extra nlmsg flags (NLM_F_CREATE | NLM_F_EXCL ...). REQUEST and ACK are always set. */
  flags?: number;
  timeoutMs?: number;
  /** Maps a kernel error to a hint the user can act on. */
  hint?: (e: NetlinkError) => ErrorHint | undefined;
}

/** One message of a batch (see NetlinkSocket.batch()). */
export interface BatchMessage {
  type: number;
  payload: Buffer;
  /** Name of the message for errors, e.g. `NFT_MSG_DELTABLE`. */
  op: string;
  /** What it is about, for errors, e.g. `ip raw`. */
  object?: string;
  /** Extra nlmsg flags. REQUEST is always set. */
  flags?: number;
  /** Sets NLM_F_ACK, and the batch waits for this message's ACK. */
  ack?: boolean;
}

export interface BatchOptions {
  /** Name of the whole batch, for a timeout or a failed send. */
  op: string;
  timeoutMs?: number;
  /** Maps a kernel error, whichever message it answers, to a hint the user can act on. */
  hint?: (e: NetlinkError) => ErrorHint | undefined;
}

interface Pending {
  op: string;
  object?: string;
  dump: boolean;
  replies: NetlinkMessage[];
  interrupted: boolean;
  hint?: (e: NetlinkError) => ErrorHint | undefined;
  resolve: (m: NetlinkMessage[]) => void;
  reject: (e: Error) => void;
  /** Absent for the messages of a batch: the batch owns one timer for all of them. */
  timer?: NodeJS.Timeout;
}

const DEFAULT_TIMEOUT_MS = 5000;

export function netnsPath(netns: string): string {
  return netns.includes('/') ? netns : `/run/netns/${netns}`;
}

/**
 * The datagram batch() sends: the messages back to back, message i with
 * sequence number seqs[i], NLM_F_REQUEST and, if it asks for one, NLM_F_ACK.
 * Exported for codec tests.
 */
export function encodeBatch(messages: readonly BatchMessage[], seqs: readonly number[]): Buffer {
  return Buffer.concat(
    messages.map((m, i) => encodeMessage({ type: m.type, flags: (m.flags ?? 0) | NLM_F_REQUEST | (m.ack ? NLM_F_ACK : 0), seq: seqs[i]!, payload: m.payload })),
  );
}

/** Sockets this process has opened: spaces their sequence numbers apart. */
let socketsOpened = 0;

export class NetlinkSocket {
  readonly protocol: number;
  readonly portId: number;
  private readonly handle: NativeSocketHandle;
  private readonly pending = new Map<number, Pending>();
  private seq: number;
  private closed = false;
  private unsolicited?: (m: NetlinkMessage) => void;
  /** Sequence numbers handed out for another process's requests (the watchdog's), and who hears their acks. */
  private readonly reserved = new Set<number>();
  private reservedAck?: (seq: number, error: number) => void;
  private socketError?: Error;
  private keepAliveWanted = false;

  private constructor(protocol: number, handle: NativeSocketHandle) {
    this.protocol = protocol;
    this.handle = handle;
    this.portId = handle.portId;
    // Start somewhere unpredictable so replies to a previous socket's requests cannot match, and
    // 2^24 apart from every other socket of this process: the watchdog matches an ack relayed from
    // any of a hold's sockets by its number alone, so two sockets opened in one millisecond (a
    // hold's queue and its nf_tables socket) must not hand out the same numbers.
    this.seq = (((Date.now() & 0xffff) << 8) + ++socketsOpened * 0x1000000) >>> 0;
    native().watch(handle, () => this.drain());
  }

  /** The socket's file descriptor (for a child process to inherit; see src/protect/hold/watchdog.ts). */
  get fd(): number {
    return this.handle.fd;
  }

  /** The sequence number the next request will carry (for messages encoded ahead, for another process to send). */
  reserveSeq(): number {
    const seq = this.nextSeq();
    this.reserved.add(seq);
    return seq;
  }

  /**
   * Hears the acknowledgements of reserved requests that this process read. A
   * socket shared with a child (the watchdog) is one queue for both readers: the
   * kernel hands each reply to whichever reads first, so a living owner can take
   * the watchdog's ack; the listener passes it on (error: 0 or -errno).
   */
  onReservedAck(listener: ((seq: number, error: number) => void) | undefined): void {
    this.reservedAck = listener;
  }

  /** Opens a socket for a netlink protocol (NETLINK_ROUTE, ...), optionally inside a network namespace. */
  static open(protocol: number, opts: OpenOptions = {}): NetlinkSocket {
    try {
      const h = native().open(protocol, opts.netns ? netnsPath(opts.netns) : null, opts.rcvbuf ?? 0);
      return new NetlinkSocket(protocol, h);
    } catch (e) {
      if (isNativeError(e)) {
        const hint =
          e.errno === 1 || e.errno === 13
            ? 'needs root (CAP_NET_ADMIN, and CAP_SYS_ADMIN to enter a namespace)'
            : e.errno === 2 && opts.netns
              ? `no network namespace at ${netnsPath(opts.netns)}`
              : e.errno === 93
                ? 'this kernel lacks that netlink protocol'
                : undefined;
        throw new SocketError(e.syscall, e.errno, hint);
      }
      throw e;
    }
  }

  /** Receives messages that match no outstanding request. */
  onUnsolicited(handler: ((m: NetlinkMessage) => void) | undefined): void {
    this.unsolicited = handler;
  }

  setsockopt(level: number, name: number, value: number): void {
    try {
      native().setsockopt(this.handle, level, name, value);
    } catch (e) {
      if (isNativeError(e)) throw new SocketError(`setsockopt(${level}, ${name})`, e.errno);
      throw e;
    }
  }

  /** Keeps the process alive while unsolicited messages are expected (an NFQUEUE hold). */
  keepAlive(on: boolean): void {
    this.keepAliveWanted = on;
    this.updateRef();
  }

  private updateRef(): void {
    if (!this.closed) native().setRef(this.handle, this.keepAliveWanted || this.pending.size > 0);
  }

  private nextSeq(): number {
    this.seq = (this.seq + 1) >>> 0;
    if (this.seq === 0) this.seq = 1; // 0 is what unsolicited messages carry
    return this.seq;
  }

  /** Sends one request and resolves with the replies that came before the ACK. */
  request(type: number, payload: Buffer, opts: RequestOptions): Promise<NetlinkMessage[]> {
    return this.exchange(type, payload, (opts.flags ?? 0) | NLM_F_ACK, false, opts);
  }

  /** Sends a dump request and resolves with every part up to NLMSG_DONE. */
  dump(type: number, payload: Buffer, opts: RequestOptions): Promise<NetlinkMessage[]> {
    return this.exchange(type, payload, (opts.flags ?? 0) | NLM_F_DUMP, true, opts);
  }

  /** A dump retried while the kernel reports NLM_F_DUMP_INTR (a change raced the dump). */
  async dumpConsistent(type: number, payload: Buffer, opts: RequestOptions, attempts = 5): Promise<NetlinkMessage[]> {
    for (let i = 1; ; i++) {
      try {
        return await this.dump(type, payload, opts);
      } catch (e) {
        if (!(e instanceof DumpInterruptedError) || i >= attempts) throw e;
      }
    }
  }

  /**
   * Sends the messages in one datagram and resolves once each message that asked
   * for an ACK has one. nfnetlink needs this for its transactions
   * (NFNL_MSG_BATCH_BEGIN, the changes, NFNL_MSG_BATCH_END), which it takes only
   * whole, in one sendmsg. Rejects, as request() does, with the first error the
   * kernel addresses to any message of the batch, including one that asked for
   * no ACK: nfnetlink answers a refused transaction (ERESTART for a stale
   * generation id, a failed commit) against the batch-begin. Times out with
   * NetlinkTimeoutError like request(). Replies other than ACKs (NLM_F_ECHO) are
   * not collected.
   *
   * The kernel answers the messages of a batch in their order, and ACKs the
   * others even when one fails (the whole transaction is then undone), so put an
   * ACK on the last message whose failure matters: an answer that arrives after
   * the batch settled goes to the unsolicited handler, like a late reply to a
   * request that timed out.
   */
  batch(messages: readonly BatchMessage[], opts: BatchOptions): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const seqs = messages.map(() => this.nextSeq());
      const awaiting = new Set(seqs.filter((_, i) => messages[i]!.ack));
      const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
      let settled = false;
      const settle = (err?: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        for (const seq of seqs) this.pending.delete(seq);
        this.updateRef();
        if (err) reject(err);
        else resolve();
      };
      const timer = setTimeout(() => settle(new NetlinkTimeoutError(opts.op, timeoutMs)), timeoutMs);
      timer.unref();
      messages.forEach((m, i) => {
        const seq = seqs[i]!;
        const p: Pending = {
          op: m.op,
          dump: false,
          replies: [],
          interrupted: false,
          resolve: () => {
            awaiting.delete(seq);
            if (awaiting.size === 0) settle();
          },
          reject: settle,
        };
        if (m.object !== undefined) p.object = m.object;
        if (opts.hint) p.hint = opts.hint;
        this.pending.set(seq, p);
      });
      try {
        this.sendRaw(encodeBatch(messages, seqs), opts.op);
      } catch (e) {
        settle(e as Error);
        return;
      }
      if (awaiting.size === 0) settle();
      else this.updateRef();
    });
  }

  /** Sends without waiting for anything (NFQUEUE verdicts without ACK). */
  send(type: number, payload: Buffer, flags = 0): void {
    this.sendRaw(encodeMessage({ type, flags: flags | NLM_F_REQUEST, seq: this.nextSeq(), payload }), 'send');
  }

  private sendRaw(buf: Buffer, op: string): void {
    if (this.closed) throw new SocketError(`${op}: socket closed`, 9);
    if (this.socketError) throw this.socketError;
    try {
      native().send(this.handle, buf);
    } catch (e) {
      if (isNativeError(e)) throw new SocketError(`${op}: sendto`, e.errno);
      throw e;
    }
  }

  private exchange(type: number, payload: Buffer, flags: number, dump: boolean, opts: RequestOptions): Promise<NetlinkMessage[]> {
    return new Promise<NetlinkMessage[]>((resolve, reject) => {
      const seq = this.nextSeq();
      const msg = encodeMessage({ type, flags: flags | NLM_F_REQUEST, seq, payload });
      const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
      const timer = setTimeout(() => {
        this.pending.delete(seq);
        this.updateRef();
        reject(new NetlinkTimeoutError(opts.op, timeoutMs));
      }, timeoutMs);
      timer.unref();
      const p: Pending = { op: opts.op, dump, replies: [], interrupted: false, resolve, reject, timer };
      if (opts.object !== undefined) p.object = opts.object;
      if (opts.hint) p.hint = opts.hint;
      this.pending.set(seq, p);
      try {
        this.sendRaw(msg, opts.op);
      } catch (e) {
        clearTimeout(timer);
        this.pending.delete(seq);
        reject(e as Error);
        return;
      }
      this.updateRef();
    });
  }

  private finish(seq: number, p: Pending, err?: Error): void {
    if (p.timer) clearTimeout(p.timer);
    this.pending.delete(seq);
    this.updateRef();
    if (err) p.reject(err);
    else p.resolve(p.replies);
  }

  private kernelError(p: Pending, errno: number, kernelMessage?: string, offset?: number): NetlinkError {
    let e = new NetlinkError({ op: p.op, object: p.object, errno, kernelMessage, offset });
    const hint = p.hint?.(e);
    if (hint) e = e.withContext(undefined, hint);
    return e;
  }

  /** Reads until the socket would block; called by the addon on readiness. */
  private drain(): void {
    for (;;) {
      let buf: Buffer | null;
      try {
        buf = native().recv(this.handle);
      } catch (e) {
        // ENOBUFS: the kernel dropped messages for us. Requests in flight may have
        // lost their replies, so fail them now instead of letting them time out.
        const err = isNativeError(e) ? new SocketError('recv', e.errno) : (e as Error);
        for (const [seq, p] of [...this.pending]) this.finish(seq, p, err);
        if (!isNativeError(e) || e.errno !== 105) this.socketError = err;
        return;
      }
      if (buf === null) return;
      let messages: NetlinkMessage[];
      try {
        messages = decodeMessages(buf);
      } catch (e) {
        for (const [seq, p] of [...this.pending]) this.finish(seq, p, e as DecodeError);
        continue;
      }
      for (const m of messages) this.dispatch(m);
    }
  }

  private dispatch(m: NetlinkMessage): void {
    const p = m.seq !== 0 ? this.pending.get(m.seq) : undefined;
    if (!p) {
      if (m.type === NLMSG_ERROR && this.reservedAck && this.reserved.has(m.seq)) {
        let error: number | undefined;
        try {
          error = decodeAck(m).error;
        } catch {
          // malformed: leave it to the unsolicited handler's counters
        }
        if (error !== undefined) {
          this.reservedAck(m.seq, error);
          return;
        }
      }
      if (m.type !== NLMSG_NOOP) this.unsolicited?.(m);
      return;
    }
    if (m.flags & NLM_F_DUMP_INTR) p.interrupted = true;
    switch (m.type) {
      case NLMSG_NOOP:
        return;
      case NLMSG_OVERRUN:
        this.finish(m.seq, p, new SocketError(`${p.op}: NLMSG_OVERRUN`, 105));
        return;
      case NLMSG_ERROR: {
        let ack;
        try {
          ack = decodeAck(m);
        } catch (e) {
          this.finish(m.seq, p, e as Error);
          return;
        }
        if (ack.error === 0) {
          // A plain ACK ends a request; in a dump it would be unexpected, but treat it as the end.
          this.finish(m.seq, p);
        } else {
          this.finish(m.seq, p, this.kernelError(p, -ack.error, ack.kernelMessage, ack.offset));
        }
        return;
      }
      case NLMSG_DONE: {
        if (!p.dump) {
          p.replies.push(m);
          return;
        }
        const done = decodeDone(m);
        if (done.error < 0) this.finish(m.seq, p, this.kernelError(p, -done.error, done.kernelMessage, done.offset));
        else if (p.interrupted) this.finish(m.seq, p, new DumpInterruptedError(p.op));
        else this.finish(m.seq, p);
        return;
      }
      default:
        p.replies.push(m);
    }
  }

  close(): void {
    if (this.closed) return;
    for (const [seq, p] of [...this.pending]) this.finish(seq, p, new SocketError(`${p.op}: socket closed`, 9));
    this.closed = true;
    native().close(this.handle);
  }
}

export { errnoName };
