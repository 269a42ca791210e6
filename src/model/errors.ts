/**
 * Every failure synhold reports, in one place: its stable `code` (undici's
 * habit: callers key on the code, not the message), the CLI exit code it maps
 * to, and its class. Product failures have their class here; the layers that
 * carry protocol details keep theirs beside the protocol (NetlinkError and kin
 * in src/netlink/errors.ts, IptablesError in src/netfilter/iptables.ts, ...)
 * but their codes are listed here too, so that this table is the whole list
 * (test/unit/errors.test.ts checks both directions).
 */

/**
 * The CLI's exit codes. protect keeps its own (CMD's status, 124-127:
 * src/protect/protect.ts). `unhealthy` is status's alone: set up, but with a
 * problem (steering gone, a stale hold record, a stopped watchdog), so that a
 * health check or a probe can use the exit status without reading the JSON.
 */
export const EXIT = { ok: 0, failed: 1, usage: 2, notSetUp: 3, busy: 4, unhealthy: 5 } as const;
export type ExitName = keyof typeof EXIT;

/** code -> the class that throws it and the CLI exit code (by name). */
export const ERROR_CODES = {
  // Bad input: nothing was changed (exit 2).
  ERR_BAD_INPUT: { class: 'ConfigError', exit: 'usage' },
  ERR_BAD_ADDRESS: { class: 'BadAddressError', exit: 'usage' },
  ERR_BAD_PORT: { class: 'BadPortError', exit: 'usage' },
  ERR_BAD_DEVICE: { class: 'BadDeviceError', exit: 'usage' },
  ERR_BAD_HANDLE: { class: 'BadHandleError', exit: 'usage' },
  // The state of the machine says no (exits 3 and 4).
  ERR_NOT_SET_UP: { class: 'NotSetUpError', exit: 'notSetUp' },
  ERR_BUSY: { class: 'BusyError', exit: 'busy' },
  // Everything else: exit 1.
  ERR_PERMISSION: { class: 'PermissionError', exit: 'failed' },
  ERR_NOT_HOLDING: { class: 'NotHoldingError', exit: 'failed' },
  ERR_STEERING_GONE: { class: 'SteeringGoneError', exit: 'failed' },
  ERR_RELEASE: { class: 'ReleaseError', exit: 'failed' },
  ERR_STATE: { class: 'StateError', exit: 'failed' },
  ERR_LOCK: { class: 'LockError', exit: 'failed' },
  ERR_WATCHDOG: { class: 'WatchdogError', exit: 'failed' },
  ERR_NATIVE_MISSING: { class: 'NativeMissingError', exit: 'failed' },
  ERR_NO_BACKEND: { class: 'NoBackendError', exit: 'failed' },
  ERR_BACKEND_UNAVAILABLE: { class: 'BackendUnavailableError', exit: 'failed' },
  ERR_NO_PLUG: { class: 'NoPlugError', exit: 'failed' },
  ERR_HANDLE_CLASH: { class: 'HandleClashError', exit: 'failed' },
  ERR_ROOT_QDISC_IN_USE: { class: 'RootQdiscInUseError', exit: 'failed' },
  ERR_FILTER_PRIO_IN_USE: { class: 'FilterPrioInUseError', exit: 'failed' },
  ERR_UNKNOWN_KIND: { class: 'UnknownKindError', exit: 'failed' },
  ERR_KERNEL_REPLY: { class: 'KernelReplyError', exit: 'failed' },
  ERR_NFQUEUE_STATS: { class: 'NfqueueStatsError', exit: 'failed' },
  ERR_DAEMON_PROTOCOL: { class: 'DaemonProtocolError', exit: 'failed' },
  ERR_DAEMON_GONE: { class: 'DaemonGoneError', exit: 'failed' },
  ERR_DAEMON_TIMEOUT: { class: 'DaemonTimeoutError', exit: 'failed' },
  ERR_BUFFER_GONE: { class: 'BufferGoneError', exit: 'failed' },
  ERR_BUFFER_TIMEOUT: { class: 'BufferTimeoutError', exit: 'failed' },
  ERR_INTERNAL: { class: 'InternalError', exit: 'failed' },
  // Classes kept beside their protocol (details in their own fields).
  ERR_NETLINK: { class: 'NetlinkError', exit: 'failed' },
  ERR_NETLINK_DUMP_INTERRUPTED: { class: 'DumpInterruptedError', exit: 'failed' },
  ERR_NETLINK_DECODE: { class: 'DecodeError', exit: 'failed' },
  ERR_NETLINK_ENCODE: { class: 'EncodeError', exit: 'failed' },
  ERR_NETLINK_SOCKET: { class: 'SocketError', exit: 'failed' },
  ERR_NETLINK_TIMEOUT: { class: 'NetlinkTimeoutError', exit: 'failed' },
  ERR_NFQUEUE_STATE: { class: 'NfQueueStateError', exit: 'failed' },
  ERR_IPTABLES: { class: 'IptablesError', exit: 'failed' },
  ERR_IPTABLES_UNAVAILABLE: { class: 'IptablesUnavailableError', exit: 'failed' },
  ERR_IPTABLES_RULE: { class: 'RuleSpecError', exit: 'failed' },
  ERR_PROGRAM_MISSING: { class: 'ProgramMissingError', exit: 'failed' },
} as const satisfies Record<string, { class: string; exit: ExitName }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export type KernelFeature = 'sch_plug' | 'sch_prio' | 'ifb' | 'nfnetlink_queue' | 'xt_NFQUEUE';

/** The base of every synhold error. Catch it, then switch on `code` (or use instanceof on a subclass). */
export class SynholdError extends Error {
  readonly code: ErrorCode;
  /**
   * The kernel feature whose absence caused this failure, named as its module
   * (`sch_plug`, `nfnetlink_queue`, `xt_NFQUEUE`). The kernel layers state the
   * fact; the CLI, which knows the alternatives, turns it into advice.
   */
  readonly lacks?: KernelFeature;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; lacks?: KernelFeature }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    if (options?.lacks !== undefined) this.lacks = options.lacks;
  }

  /** The exit status of a CLI command that fails with this error (not protect's: see EXIT). */
  get cliExitCode(): number {
    return EXIT[ERROR_CODES[this.code].exit];
  }
}

type Options = { cause?: unknown; lacks?: KernelFeature };

/** Bad input (a value, an option, a file): rejected before anything changed. */
export class ConfigError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_BAD_INPUT', message, options);
  }
}
/** Not an IPv4/IPv6 address or prefix, or not of the family required. */
export class BadAddressError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_BAD_ADDRESS', message, options);
  }
}
/** A port outside 1..65535, or an empty port list. */
export class BadPortError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_BAD_PORT', message, options);
  }
}
/** No such network device, or one synhold cannot hold on. */
export class BadDeviceError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_BAD_DEVICE', message, options);
  }
}
/** Not a tc handle (MAJOR:MINOR in hex). */
export class BadHandleError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_BAD_HANDLE', message, options);
  }
}
/** Missing privileges (CAP_NET_ADMIN, CAP_SYS_ADMIN to enter a namespace). */
export class PermissionError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_PERMISSION', message, options);
  }
}
/** `synhold setup` has not run in this namespace (or was torn down meanwhile). */
export class NotSetUpError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_NOT_SET_UP', message, options);
  }
}
/** Another hold (or buffer, or setup change) owns the lock: nothing was changed. */
export class BusyError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_BUSY', message, options);
  }
}
/** A release asked of a daemon connection that holds nothing. */
export class NotHoldingError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_NOT_HOLDING', message, options);
  }
}
/** What setup installed (a rule, a qdisc, a device) is gone: a hold would protect nothing. */
export class SteeringGoneError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_STEERING_GONE', message, options);
  }
}
/** A release failed, the owner's and the watchdog's: their sockets are closed (the kernel lets traffic through). */
export class ReleaseError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_RELEASE', message, options);
  }
}
/** synhold's state directory could not be read or written (the traffic itself was released). */
export class StateError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_STATE', message, options);
  }
}
/** The hold lock could not be taken for a reason other than another holder. */
export class LockError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_LOCK', message, options);
  }
}
/** The watchdog (the dead-man's switch) could not be started: no hold began. */
export class WatchdogError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_WATCHDOG', message, options);
  }
}
/** The native addon or the watchdog program is not built. */
export class NativeMissingError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_NATIVE_MISSING', message, options);
  }
}
/** No hold backend works on this kernel (setup's auto choice). */
export class NoBackendError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_NO_BACKEND', message, options);
  }
}
/** The backend asked for cannot work on this kernel (`lacks` says why). */
export class BackendUnavailableError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_BACKEND_UNAVAILABLE', message, options);
  }
}
/** No plug qdisc where one was expected. */
export class NoPlugError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_NO_PLUG', message, options);
  }
}
/** A qdisc of another kind already has the handle synhold would use. */
export class HandleClashError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_HANDLE_CLASH', message, options);
  }
}
/** The device's root qdisc is someone else's: synhold will not replace it. */
export class RootQdiscInUseError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_ROOT_QDISC_IN_USE', message, options);
  }
}
/** A tc filter priority synhold needs is taken by someone else's filter. */
export class FilterPrioInUseError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_FILTER_PRIO_IN_USE', message, options);
  }
}
/** A qdisc, filter or action kind synhold cannot encode. */
export class UnknownKindError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_UNKNOWN_KIND', message, options);
  }
}
/** The kernel acknowledged a request but its reply lacked what it must carry. */
export class KernelReplyError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_KERNEL_REPLY', message, options);
  }
}
/** /proc/net/netfilter/nfnetlink_queue could not be read. */
export class NfqueueStatsError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_NFQUEUE_STATS', message, options);
  }
}
/** A request to the daemon that it cannot take (malformed, too long, a second hold on one connection). */
export class DaemonProtocolError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_DAEMON_PROTOCOL', message, options);
  }
}
/** The daemon went away before it answered. */
export class DaemonGoneError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_DAEMON_GONE', message, options);
  }
}
/** The daemon did not answer in time. */
export class DaemonTimeoutError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_DAEMON_TIMEOUT', message, options);
  }
}
/** A buffer's owner closed its control connection without answering. */
export class BufferGoneError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_BUFFER_GONE', message, options);
  }
}
/** A buffer's owner did not answer in time (stopped?). */
export class BufferTimeoutError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_BUFFER_TIMEOUT', message, options);
  }
}
/** A failure with no code of its own, reported by another synhold process (a bug: please report it). */
export class InternalError extends SynholdError {
  constructor(message: string, options?: Options) {
    super('ERR_INTERNAL', message, options);
  }
}

const BY_CODE: Partial<Record<ErrorCode, new (message: string) => SynholdError>> = {
  ERR_BAD_INPUT: ConfigError,
  ERR_BAD_ADDRESS: BadAddressError,
  ERR_BAD_PORT: BadPortError,
  ERR_BAD_DEVICE: BadDeviceError,
  ERR_BAD_HANDLE: BadHandleError,
  ERR_PERMISSION: PermissionError,
  ERR_NOT_SET_UP: NotSetUpError,
  ERR_BUSY: BusyError,
  ERR_NOT_HOLDING: NotHoldingError,
  ERR_STEERING_GONE: SteeringGoneError,
  ERR_RELEASE: ReleaseError,
  ERR_STATE: StateError,
  ERR_LOCK: LockError,
  ERR_WATCHDOG: WatchdogError,
  ERR_NATIVE_MISSING: NativeMissingError,
  ERR_NO_BACKEND: NoBackendError,
  ERR_BACKEND_UNAVAILABLE: BackendUnavailableError,
  ERR_NO_PLUG: NoPlugError,
  ERR_HANDLE_CLASH: HandleClashError,
  ERR_ROOT_QDISC_IN_USE: RootQdiscInUseError,
  ERR_FILTER_PRIO_IN_USE: FilterPrioInUseError,
  ERR_UNKNOWN_KIND: UnknownKindError,
  ERR_KERNEL_REPLY: KernelReplyError,
  ERR_NFQUEUE_STATS: NfqueueStatsError,
  ERR_DAEMON_PROTOCOL: DaemonProtocolError,
  ERR_DAEMON_GONE: DaemonGoneError,
  ERR_DAEMON_TIMEOUT: DaemonTimeoutError,
  ERR_BUFFER_GONE: BufferGoneError,
  ERR_BUFFER_TIMEOUT: BufferTimeoutError,
  ERR_INTERNAL: InternalError,
};

/** The product error classes by code (those whose only field is the message): what errorFromWire can rebuild. */
export const ERROR_CLASSES: Readonly<typeof BY_CODE> = BY_CODE;

/** Whether `code` is one of synhold's error codes (the table above; docs/ERRORS.md). CLI equivalent: none; the CLI's exit status is the code's. */
export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(ERROR_CODES, code);
}

/**
 * Rebuilds an error another synhold process reported as {code, message} (the
 * daemon's and a buffer owner's replies): the same class where the code has a
 * plain one, else the base class with the same code, so `code` and the CLI's
 * exit code are those of the process that failed.
 */
export function errorFromWire(code: unknown, message: string): SynholdError {
  if (!isErrorCode(code)) return new InternalError(`${message}${typeof code === 'string' ? ` (${code})` : ''}`);
  const C = BY_CODE[code];
  return C ? new C(message) : new SynholdError(code, message);
}
