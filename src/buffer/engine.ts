/**
 * How a buffer holds, behind one interface: the nfqueue engine (every packet
 * seen, released N at a time or dropped; works without sch_plug) and the plug
 * engine (the kernel holds and only counts; releases whole epochs). The owner
 * (buffer.ts) drives either the same way:
 *
 *   prepare   open sockets, remove what a dead buffer on this queue left, build
 *             the watchdog's release (nothing is held yet)
 *   start     hold, then steer the filter's packets to the hold
 *   step/list while holding
 *   releaseAll  let everything go and stop holding (traffic flows from here)
 *   removeSteering  remove the rules/filters (after releaseAll, or after the watchdog released)
 *   close     close the sockets
 */
import type { Fallback } from '../backends/backend.js';
import type { HeldPacket } from './held.js';

export type BufferBackend = 'nfqueue' | 'plug';

/** Why a buffer ended. */
export type BufferEndCause = 'release' | 'max-hold' | 'signal' | 'owner-gone' | 'watchdog-gone';

/** How a buffer ended, and what it let go: what the owner, the control socket and the CLI report. */
export interface BufferReleased {
  /** Packets let go at the end (not counting earlier steps). */
  released: number;
  /** Over the buffer's life: packets let go by steps, and dropped by steps. */
  stepped: number;
  dropped: number;
  durationMs: number;
  cause: BufferEndCause;
  /** Who let go: this process, or the watchdog on its own (max-hold, SIGTERM). */
  by: 'owner' | 'watchdog';
}

export interface StepOptions {
  /** Release (or drop) only the oldest N held packets (default: the whole epoch; with drop, 1). nfqueue only. */
  count?: number;
  /** Drop instead of releasing. nfqueue only. */
  drop?: boolean;
}

export interface StepResult {
  released: number;
  dropped: number;
  /** The kernel ids of the packets let go (or dropped), oldest first (nfqueue; empty with plug, which only counts). */
  ids: number[];
  /** Packets still held after the step. */
  held: number;
}

/** What is held: every packet with nfqueue; with plug, counts only (sch_plug keeps no list we can read). */
export interface BufferHeld {
  heldPackets: number;
  heldBytes?: number;
  packets?: HeldPacket[];
}

export interface BufferEngine {
  readonly backend: BufferBackend;
  /** The watchdog's release, encoded before anything is held. */
  readonly fallback: Fallback;
  start(): Promise<void>;
  list(): Promise<BufferHeld>;
  step(o: StepOptions): Promise<StepResult>;
  /** Resolves with how many packets it let go. */
  releaseAll(): Promise<number>;
  removeSteering(): Promise<void>;
  /** After the watchdog released on its own: forget what was held, remove what is left. */
  afterWatchdog(): Promise<number>;
  close(): void;
}
