/**
 * Why a hold ended, typed: every path that releases says which of these it is,
 * and status, stats, metrics and protect's report read the kind, never a string.
 */
export type ReleaseCause =
  /** The listening sockets say the reload is done (the text says which rule fired). */
  | { kind: 'reload-done'; detail: string }
  /** CMD exited and nothing was left to wait for. */
  | { kind: 'command-exited'; detail?: string }
  | { kind: 'command-failed' }
  /** protect's --timeout. */
  | { kind: 'timeout' }
  /** protect got this signal. */
  | { kind: 'signal'; signal: string }
  /** `synhold release` (or the library's release()). */
  | { kind: 'manual' }
  | { kind: 'teardown' }
  | { kind: 'daemon-stopping' }
  /** The watchdog's deadline. */
  | { kind: 'max-hold' }
  /** The process the hold was for died (protect killed, the daemon's client gone). */
  | { kind: 'owner-gone' }
  /** The watchdog died while its owner lived: the owner released at once rather than hold with no switch. */
  | { kind: 'watchdog-gone' }
  /** A hold whose owner and watchdog were both gone, released by whoever found it. */
  | { kind: 'recovered' }
  /** synhold failed (the message says how). */
  | { kind: 'error'; message: string };

export type ReleaseKind = ReleaseCause['kind'];

/** Releases that a safety net did, not the owner's plan: counted as watchdog releases. */
const BY_SAFETY_NET: ReadonlySet<ReleaseKind> = new Set(['max-hold', 'owner-gone', 'watchdog-gone', 'recovered']);

export function isSafetyNet(c: ReleaseCause | ReleaseKind): boolean {
  return BY_SAFETY_NET.has(typeof c === 'string' ? c : c.kind);
}

/** One line for people. */
export function describeCause(c: ReleaseCause): string {
  switch (c.kind) {
    case 'reload-done':
      return c.detail;
    case 'command-exited':
      return c.detail ?? 'command exited';
    case 'command-failed':
      return 'command failed';
    case 'timeout':
      return 'timeout';
    case 'signal':
      return `synhold got ${c.signal}`;
    case 'manual':
      return 'released by synhold release';
    case 'teardown':
      return 'teardown';
    case 'daemon-stopping':
      return 'daemon stopping';
    case 'max-hold':
      return 'max-hold reached';
    case 'owner-gone':
      return 'owner gone';
    case 'watchdog-gone':
      return 'watchdog died; released by its owner';
    case 'recovered':
      return 'recovered: owner and watchdog were gone';
    case 'error':
      return `synhold error: ${c.message}`;
  }
}
