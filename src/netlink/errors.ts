/**
 * One error class per failure, each with a stable `code` (undici's habit), and
 * a message that reads: operation -> object -> errno name -> kernel text -> hint.
 */
import { SynholdError, type KernelFeature } from '../model/errors.js';
import { errnoName } from './errno.js';

export interface NetlinkErrorDetails {
  /** The request, e.g. `RTM_NEWQDISC`. */
  op: string;
  /** What it was about, e.g. `dev lo parent 1:4 kind plug`. */
  object?: string;
  /** Positive errno. */
  errno: number;
  /** The kernel's extended-ack text, when it sent one. */
  kernelMessage?: string;
  /** Byte offset in our request of the attribute the kernel blamed. */
  offset?: number;
  /** Something the user can do about it. */
  hint?: string;
  /** The kernel feature the error shows to be missing. */
  lacks?: KernelFeature;
}

/** What a layer that knows the request can add to a kernel error: a hint, and the missing feature if that is the cause. */
export type ErrorHint = string | { text: string; lacks: KernelFeature };

/** The kernel answered a request with a negative error. */
export class NetlinkError extends SynholdError implements NetlinkErrorDetails {
  readonly op: string;
  readonly object?: string;
  readonly errno: number;
  readonly errnoName: string;
  readonly kernelMessage?: string;
  readonly offset?: number;
  readonly hint?: string;

  constructor(d: NetlinkErrorDetails) {
    const name = errnoName(d.errno);
    let msg = d.object ? `${d.op} ${d.object}: ${name}` : `${d.op}: ${name}`;
    if (d.kernelMessage) msg += ` (${d.kernelMessage})`;
    if (d.hint) msg += ` - ${d.hint}`;
    super('ERR_NETLINK', msg, d.lacks !== undefined ? { lacks: d.lacks } : undefined);
    this.op = d.op;
    this.object = d.object;
    this.errno = d.errno;
    this.errnoName = name;
    this.kernelMessage = d.kernelMessage;
    this.offset = d.offset;
    this.hint = d.hint;
  }

  /** A copy with the object and hint filled in by a layer that knows them. */
  withContext(object: string | undefined, hint: ErrorHint | undefined): NetlinkError {
    const text = typeof hint === 'object' ? hint.text : hint;
    return new NetlinkError({
      lacks: typeof hint === 'object' ? hint.lacks : this.lacks,
      op: this.op,
      object: object ?? this.object,
      errno: this.errno,
      kernelMessage: this.kernelMessage,
      offset: this.offset,
      hint: text ?? this.hint,
    });
  }
}

/** A dump changed while the kernel was producing it (NLM_F_DUMP_INTR): retry it. */
export class DumpInterruptedError extends SynholdError {
  readonly op: string;
  constructor(op: string) {
    super('ERR_NETLINK_DUMP_INTERRUPTED', `${op}: dump interrupted by a concurrent change (NLM_F_DUMP_INTR); retry`);
    this.op = op;
  }
}

/** Bytes that do not parse as what they claim to be. */
export class DecodeError extends SynholdError {
  readonly offset: number;
  readonly what: string;
  constructor(what: string, offset: number, detail: string) {
    super('ERR_NETLINK_DECODE', `decode ${what} at byte ${offset}: ${detail}`);
    this.what = what;
    this.offset = offset;
  }
}

/** A value cannot be encoded (out of range, unknown attribute name, ...). */
export class EncodeError extends SynholdError {
  constructor(what: string, detail: string) {
    super('ERR_NETLINK_ENCODE', `encode ${what}: ${detail}`);
  }
}

/** A system call on the netlink socket itself failed (not a kernel reply). */
export class SocketError extends SynholdError {
  readonly errno: number;
  readonly errnoName: string;
  constructor(step: string, errno: number, hint?: string) {
    const name = errnoName(errno);
    super('ERR_NETLINK_SOCKET', `${step}: ${name}${hint ? ` - ${hint}` : ''}`);
    this.errno = errno;
    this.errnoName = name;
  }
}

/** No reply within the deadline; the kernel always answers, so this means a bug or a wedged socket. */
export class NetlinkTimeoutError extends SynholdError {
  constructor(op: string, ms: number) {
    super('ERR_NETLINK_TIMEOUT', `${op}: no reply from the kernel within ${ms} ms`);
  }
}
