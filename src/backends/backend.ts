/**
 * The one interface every hold backend (plug, nfqueue, drop) implements.
 *
 * A backend has two lives: setup time (install/uninstall the steering that
 * brings new SYNs to the hold, atomically) and hold time: prepare (open the
 * sockets, resolve the devices, check the steering is still there), then start,
 * then release. Between prepare and start, the owner of the hold hands the
 * backend's fallback to a watchdog process (src/protect/hold/), which ends the
 * hold with it if the owner cannot.
 */
import type { Rtnl } from '../rtnl/rtnl.js';
import type { BackendName, SetupConfig } from '../model/config.js';

export interface BackendContext {
  rt: Rtnl;
  /** The network namespace everything happens in (undefined: our own). */
  netns?: string;
}

/** What a backend holds and has let through, as the kernel counts it. */
export interface HoldCounters {
  /** Packets held right now. */
  heldPackets: number;
  heldBytes?: number;
  /** Packets lost because the hold was full, since setup. */
  drops: number;
  /** Packets that went through the hold path since setup. */
  packets?: number;
}

export interface ReleaseResult {
  /** Packets let go at release (what was held). */
  released: number;
  /** Drops during this hold (limit or queue overflow). */
  drops: number;
  /**
   * Packets that other NFQUEUE users of the namespace held when this hold's steering was removed,
   * which the kernel dropped with it (nfqueue, steering while-holding, only after waiting for them:
   * OTHERS_IDLE_WAIT_MS); their senders retransmit. Absent: none.
   */
  othersCut?: number;
  /** How long the release waited for other NFQUEUE users to hold nothing (same), ms; after every verdict of this hold. Absent: no wait. */
  othersWaitMs?: number;
}

export interface ActiveHold {
  release(): Promise<ReleaseResult>;
  /**
   * What release() undoes besides letting the traffic go, for a hold the watchdog let go of on its own
   * (max-hold, `synhold release`, the client gone) while its owner lives: the watchdog sends only what
   * was encoded before the hold began, so what the start decided (a hook it made) is the owner's to
   * remove. Called under the hold lock, after the watchdog has exited; never lets traffic be held.
   */
  afterWatchdogRelease?(): Promise<void>;
}

/**
 * How to end a hold without its owner: what the watchdog sends or runs. Every
 * step must be harmless when nothing is held (it may run after the owner's own
 * release, or before the hold began).
 */
export interface Fallback {
  /** File descriptors the watchdog inherits (netlink sockets). */
  sockets: number[];
  /** Whole netlink requests, in order, each sent on sockets[socket] and acknowledged. */
  messages: { socket: number; bytes: Buffer }[];
  /** Commands (argv) to run after the messages. */
  commands: string[][];
  /**
   * Subscribes to acks of `messages` that this process read from a socket it
   * shares with the watchdog (the kernel gives a reply to whichever reader is
   * first); the watchdog hears them over its owner pipe. Without it, a living
   * owner could take every ack of the watchdog's release and make it fail.
   */
  relayAcks?: (listener: (seq: number, error: number) => void) => void;
}

/** One hold, ready to start: its sockets open, its devices resolved, its steering checked. */
export interface PreparedHold {
  readonly fallback: Fallback;
  /**
   * Turns the hold on. A start that fails undoes what it did; one whose undo failed too (so the hold
   * may be on) says so with markHoldMayBeOn, and its caller has the watchdog send its release. Not
   * otherwise: a fallback release can touch objects of the same name that are not the hold's (an
   * nfqueue hold's watchdog deletes its tables by name, and one in the way is what a start may fail on).
   */
  start(): Promise<ActiveHold>;
  /** Closes what prepare opened (after release, or when start never ran or failed). */
  close(): void;
}

const HOLD_MAY_BE_ON = Symbol('synhold.holdMayBeOn');

/** Marks a start()'s error: its undo failed, and the hold may be on. */
export function markHoldMayBeOn(e: unknown): void {
  if (e !== null && typeof e === 'object') (e as { [HOLD_MAY_BE_ON]?: true })[HOLD_MAY_BE_ON] = true;
}

/** Whether a start()'s error says the hold may be on (markHoldMayBeOn). */
export function holdMayBeOn(e: unknown): boolean {
  return e !== null && typeof e === 'object' && (e as { [HOLD_MAY_BE_ON]?: true })[HOLD_MAY_BE_ON] === true;
}

/** Whether a backend can work on this kernel (`--backend auto` asks each in turn). */
export interface ProbeResult {
  ok: boolean;
  /** What is missing, in kernel terms (module / config option). */
  missing?: string;
}

export interface HoldBackend<State = unknown> {
  readonly name: BackendName;
  /** One line on what holding costs a client, for status and docs. */
  readonly cost: string;
  /** Can this kernel hold the way `cfg` asks, without touching any traffic? */
  probe(cfg: SetupConfig, ctx: BackendContext): Promise<ProbeResult>;
  /** Installs the steering; on failure removes whatever it created and rethrows. */
  install(cfg: SetupConfig, ctx: BackendContext): Promise<State>;
  /** Removes what install created, and nothing else. Releases first. */
  uninstall(state: State, ctx: BackendContext): Promise<void>;
  /** Whether what install created is still in place (setup's idempotency check). */
  verify(state: State, ctx: BackendContext): Promise<string | undefined>;
  /**
   * Gets a hold ready without holding. Fails with ERR_STEERING_GONE when the
   * steering setup installed is no longer there (a flushed table, a replaced
   * qdisc): holding then would protect nothing.
   */
  prepare(state: State, ctx: BackendContext): Promise<PreparedHold>;
  /** Releases with no holder (recovery after a crash); a no-op when nothing is held. */
  forceRelease(state: State, ctx: BackendContext): Promise<void>;
  counters(state: State, ctx: BackendContext): Promise<HoldCounters>;
}

/** Runs steps, remembering how to undo each; on failure undoes them in reverse and rethrows. */
export class UndoStack {
  private readonly undos: { what: string; fn: () => Promise<void> }[] = [];

  push(what: string, fn: () => Promise<void>): void {
    this.undos.push({ what, fn });
  }

  /** Undoes everything, newest first; errors are collected, not thrown, so every step gets its turn. */
  async unwind(): Promise<string[]> {
    const errors: string[] = [];
    while (this.undos.length) {
      const u = this.undos.pop()!;
      try {
        await u.fn();
      } catch (e) {
        errors.push(`undo ${u.what}: ${(e as Error).message}`);
      }
    }
    return errors;
  }
}

/** Wraps an install: anything pushed on the stack is undone if `fn` throws. */
export async function atomically<T>(fn: (undo: UndoStack) => Promise<T>): Promise<T> {
  const undo = new UndoStack();
  try {
    return await fn(undo);
  } catch (e) {
    const errors = await undo.unwind();
    if (errors.length && e instanceof Error) e.message += `; cleanup also failed: ${errors.join('; ')}`;
    throw e;
  }
}
