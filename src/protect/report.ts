/**
 * What protect is asked (ProtectOptions) and what it reports (ProtectResult, with its --stop-old part):
 * the contract of the library's protect() and of `synhold protect --json`. Apart from the code that
 * fills them, so that protect.ts, observe.ts and stop-old.ts all name them without importing each other.
 */
import type { ReleaseCause } from './hold/cause.js';

export interface ProtectOptions {
  command: string[];
  netns?: string;
  /** Kill CMD and exit 124 after this long (the hold is released first). */
  timeoutMs?: number;
  /** No hold lasts longer than this, whatever happens. */
  maxHoldMs: number;
  /** How long to wait for another hold to end. */
  lockWaitMs: number;
  /** Release only once this address accepts a connection (one that does not pass through the hold). */
  ready?: { host: string; port: number };
  /** Socket poll interval while holding. */
  pollMs?: number;
  /** Wake on the kernel's notification that an old listener was freed (default true; false: polling alone, for measuring). */
  destroyEvents?: boolean;
  /** 'sockets' (default): the socket rules or CMD's exit; 'exit': only CMD's exit; 'swap': only the socket swap (a CMD that returns early). See release-policy.ts. */
  releaseOn?: 'sockets' | 'exit' | 'swap';
  /** After CMD exits, how long to keep holding while a new listener is up and an old one is still open. */
  settleWaitMs?: number;
  /**
   * 'realtime' (default): while holding, protect's loop runs at real-time priority (SCHED_FIFO 1,
   * its thread only; CMD and the watchdog stay normal), so a busy CPU does not delay the release
   * (host/sched.ts); without the privilege, or on one CPU, it holds at normal priority and says why in the result.
   * 'normal': leave the priority alone.
   */
  priority?: 'realtime' | 'normal';
  /**
   * Hold only around the old server's stop (stop-old.ts): CMD starts the new server beside the old
   * one (`haproxy ... -D` without -sf), and once it listens protect holds, sends this signal to the
   * processes that held the listeners before CMD (SIGUSR1: HAProxy's soft stop), and releases when
   * their listeners are freed. Not with releaseOn exit or swap.
   */
  stopOld?: NodeJS.Signals;
  /**
   * With stopOld (default true): while the new server starts, new connections are steered to the
   * old listener (still accepting), and the old server is stopped once the new one polls its
   * listeners (steer.ts). false: stopped as soon as the new listeners are up.
   */
  startGuard?: boolean;
  /** Ends protect like SIGTERM does (the library's cancellation). */
  signal?: AbortSignal;
  /** Called with progress lines (for --verbose). */
  log?: (line: string) => void;
}

export interface ProtectResult {
  exitCode: number;
  /** CMD's own outcome (null fields if it never ran). */
  command: { exitCode: number | null; signal: NodeJS.Signals | null; error?: string };
  timedOut: boolean;
  /**
   * When the hold began (wall clock, ISO 8601 with ms), so that a hold can be placed beside other
   * logs: a client's slow connect, a load generator's record. With holdMs, the window SYNs waited in.
   */
  holdStartedAt?: string;
  holdMs?: number;
  released?: number;
  drops?: number;
  /** Why the hold ended, for people. */
  releaseReason?: string;
  /** Why the hold ended, typed. */
  releaseCause?: ReleaseCause['kind'];
  /** Who let go: protect's side, or the watchdog on its own (max-hold, synhold release). */
  releasedBy?: 'owner' | 'watchdog';
  /**
   * Packets other NFQUEUE users of the namespace still held when this hold's steering went, after
   * waiting for them (steering while-holding: OTHERS_IDLE_WAIT_MS); the kernel dropped them and
   * their senders retransmit. Absent: none.
   */
  othersCut?: number;
  /** How long the release waited for other NFQUEUE users to hold nothing, ms: included in holdMs, though every held SYN had its verdict before it. */
  othersWaitMs?: number;
  /** The hold's steering still in place after the watchdog ended the hold, and why (Released.steeringLeft). Absent: removed. */
  steeringLeft?: string;
  /** From hold start to CMD's exit. */
  commandMs?: number;
  /**
   * What protect saw of the reload, in ms from the hold's start (absent: not seen while holding): the
   * first listener of a protected port that was not there before, the moment none of the old ones was
   * left, and when the release was sent. Seen by polls, so each is up to one poll late.
   */
  timeline?: { newListenerMs?: number; oldGoneMs?: number; releaseSentMs: number; handover?: Handover; stopSentMs?: number };
  /** --stop-old: whom it signalled, when, and what was not held (stop-old.ts). */
  stopOld?: StopOldReport;
  /** The priority protect's loop held at (ProtectOptions.priority): real-time or not, and why not when it was asked. */
  priority?: { realtime: boolean; reason?: string };
}

/**
 * --release-on swap: the same listening socket(s) passed from one process to another
 * (HAProxy master-worker's `-x sockpair@N`), seen in /proc/PID/fd. `ms` from the hold's
 * start, when first seen; `from`/`to` the pids holding the sockets then and at the start.
 */
export interface Handover {
  ms: number;
  from: number[];
  to: number[];
}

/** What --stop-old did: whom it signalled, and what the hold was spared. */
export interface StopOldReport {
  signal: NodeJS.Signals;
  /** The old server: the processes that held the protected listeners before CMD. */
  pids: number[];
  /** From CMD's start to the hold's start: the new server's start-up, not held. */
  unheldMs?: number;
  /** From the hold's start to the signal: the old listeners' queues and the port's handshakes emptying. */
  drainMs?: number;
  /** Connections queued on the old listeners when the signal went (0 unless the drain gave up: drainBounds). */
  queuedAtSignal?: number;
  /** Connections to the protected ports mid-handshake (SYN_RECV) when the signal went (0 unless the drain gave up; not counted, 0, with tcp_migrate_req=1). */
  handshakingAtSignal?: number;
  /**
   * stopped: signalled and held around its stop; nothing-to-stop: no listener before CMD (nothing
   * held); command-failed: CMD failed, the old server left serving (nothing held); not-replaced: CMD
   * succeeded but no new server listened by --settle-wait after it, the old one left serving
   * (nothing held; protect exits 125); interrupted: a signal or --timeout before the new server was up.
   */
  outcome: 'stopped' | 'nothing-to-stop' | 'command-failed' | 'not-replaced' | 'interrupted';
  /** Why the old server was left running, when it was. */
  left?: string;
  /** The start guard (steer.ts): the groups steered to the old listener while the new server started, and notes. */
  steer?: SteerReport;
  /** From the new listeners up to the new server polling them (the start guard's wait; not held). */
  pollWaitMs?: number;
  /** With the steer turned to the new server: the old listeners' queues emptying before the hold (not held). */
  unheldDrainMs?: number;
  /** Said before CMD ran: net.ipv4.tcp_migrate_req is not 1 here (docs/PROTECT.md: the kernel lab lost requests so). */
  warning?: string;
}

/** What the start guard (steer.ts) did, for protect's report. */
export interface SteerReport {
  /** Groups steered to their oldest socket (the old server's) before CMD, as `family address port N`. */
  steered: string[];
  /** Of those, the groups turned to the new socket once the new server polled it. */
  toNew: string[];
  /** Why a group was not steered, not turned, or the steer not undone (one line each). */
  notes: string[];
}
