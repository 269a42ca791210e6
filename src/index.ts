/**
 * synhold as a library: `import { setup, protect, hold, Plug, ... } from 'synhold'`.
 *
 * Every function here is what a CLI command does (the CLI is a thin user of
 * the same modules); each comment names its command. Errors are SynholdError
 * subclasses with a stable `code`. Runnable examples: examples/library/.
 * docs/API.md is generated from these comments (`node scripts/api-doc.mjs`).
 */
import { Rtnl } from './rtnl/rtnl.js';
import { HoldSession, type Held, type Released } from './protect/hold/session.js';
import { releaseHere, type ReleaseHereResult } from './protect/hold/recover.js';
import { StateStore } from './protect/state.js';
import { NotSetUpError } from './model/errors.js';

export {
  setup,
  teardown,
  status,
  type Scope,
  type SetupResult,
  type TeardownResult,
  type StatusReport,
  type SteeringReport,
  type TopologyReport,
} from './protect/setup.js';
export { protect, DEFAULT_MAX_HOLD_MS, DEFAULT_SETTLE_WAIT_MS, type ProtectOptions, type ProtectResult } from './protect/protect.js';
export type { StopOldReport } from './protect/report.js';
export { runDaemon, type DaemonOptions } from './protect/daemon.js';
export {
  normalizeConfig,
  parseDuration,
  parseSize,
  MAX_DURATION_MS,
  type SetupConfig,
  type BackendName,
  type EgressTopology,
  type Steering,
} from './model/config.js';
export { Plug, type PlugRef, type PlugStats } from './plug/plug.js';
export { Rtnl } from './rtnl/rtnl.js';
/**
 * Errors: every failure is a SynholdError subclass with a stable `code`.
 * CLI equivalent: the one line `synhold` prints on stderr, and the exit status
 * its code maps to in ERROR_CODES (docs/ERRORS.md): 2 bad input, 3 not set up,
 * 4 busy, 1 the rest (`synhold protect`: 125).
 */
export * from './model/errors.js';
/** Netlink failures: the operation, errno, the kernel's extack text and offset. CLI equivalent: the `synhold` line on stderr, exit status 1 (docs/ERRORS.md). */
export { NetlinkError, DumpInterruptedError, DecodeError, EncodeError, SocketError, NetlinkTimeoutError } from './netlink/errors.js';
/** An iptables command that failed (what ran, its status, its stderr's tail), or no iptables that can install the rule. CLI equivalent: the `synhold` line on stderr, exit status 1. */
export { IptablesError, IptablesUnavailableError } from './netfilter/iptables.js';
/** An iptables rule specification synhold cannot build or parse. CLI equivalent: the `synhold` line on stderr, exit status 1. */
export { RuleSpecError } from './netfilter/rules.js';
/** An NFQUEUE used after unbind() or close(). CLI equivalent: the `synhold` line on stderr, exit status 1. */
export { NfQueueStateError } from './nfqueue/nfnetlink_queue.js';
/** A program synhold needs is not installed. CLI equivalent: the `synhold` line on stderr, exit status 1. */
export { ProgramMissingError } from './host/programs.js';
/**
 * Why a hold ended. CLI equivalent: the reason in parentheses on `synhold status`'s
 * `last hold:` line, and `releaseCause` in `synhold protect --json`'s result.
 */
export { describeCause, type ReleaseCause } from './protect/hold/cause.js';
export type { Held, Released } from './protect/hold/session.js';
/**
 * A packet-level pause for any flow: `await using b = await buffer({ dport: 8080, direction: 'both' }); await b.step(); await b.release()`.
 * CLI equivalent: `synhold buffer start --dport 8080 --direction both` (the owner, in the foreground), then `synhold buffer step|list|release`.
 */
export { buffer, type PacketBuffer, type BufferOptions, type StepOptions, type StepResult, type BufferReleased } from './buffer/buffer.js';
/** A buffer another process owns. CLI equivalents: `synhold buffer list`, `synhold buffer step [--count N] [--drop]`, `synhold buffer release`. */
export { listBuffer, stepBuffer, releaseBuffer, type BufferRef } from './buffer/client.js';
export type { HeldPacket } from './buffer/held.js';
export type { BufferFilter, BufferFilterInput } from './buffer/filter.js';

/** A hold this process owns: released by release(), by disposal, at max-hold, or by the watchdog if this process dies. */
export interface Hold extends AsyncDisposable {
  readonly held: Held;
  /** Resolves when the hold ended, whoever ended it. */
  readonly done: Promise<Released>;
  release(): Promise<Released>;
}

/**
 * Holds new connections to the protected ports until release() (or max-hold).
 * CLI equivalent: `synhold plug --max-hold D` then `synhold release`, except
 * that this hold belongs to the calling process: if it dies, the hold ends.
 *
 * ```ts
 * await using h = await hold({ maxHoldMs: 2000 }); // TypeScript 5.2+; or call h[Symbol.asyncDispose]()
 * ```
 */
export async function hold(opts: { netns?: string; maxHoldMs: number; lockWaitMs?: number; signal?: AbortSignal }): Promise<Hold> {
  const s = await HoldSession.start({
    ...(opts.netns ? { netns: opts.netns } : {}),
    maxHoldMs: opts.maxHoldMs,
    lockWaitMs: opts.lockWaitMs ?? 0,
    via: 'plug',
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  const release = () => s.release({ kind: 'manual' });
  return { held: s.held, done: s.done, release, [Symbol.asyncDispose]: async () => void (await release()) };
}

/** Ends whatever hold is on in the namespace (through its watchdog). CLI equivalent: `synhold release`. */
export async function release(opts: { netns?: string; waitMs?: number } = {}): Promise<ReleaseHereResult> {
  const store = StateStore.for(opts.netns);
  const setupRecord = store.readSetup();
  if (!setupRecord) throw new NotSetUpError('synhold is not set up here; nothing to release');
  return releaseHere(store, setupRecord, opts.netns, { waitMs: opts.waitMs ?? 3000 });
}

/** Opens rtnetlink (in a namespace, if given) for the Plug control API; close() it when done. CLI equivalent: none (`tc` for one-off changes). */
export function openRtnl(netns?: string): Rtnl {
  return netns ? Rtnl.open({ netns }) : Rtnl.open();
}
