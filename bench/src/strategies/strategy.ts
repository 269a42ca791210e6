// What a reload strategy is, for the bench: how HAProxy is started (plain -sf
// or with fd hand-over), what has to be set up in the namespace first, how
// each reload is run (a rewritten argv, or hooks around it), how long new
// connections were held, and how to undo the set-up.
//
// A strategy never starts servers or load itself (run-strategy.ts does, the
// same way for all of them), so the only differences between two rows of the
// bench's table are the ones written in these small modules.
//
// Every strategy runs inside a network namespace the bench created, so its
// commands (tc, sysctl, synhold) act on that namespace without --netns.

import type { HaproxyMode, HaproxyServer } from '../servers.js';
import type { ReloadLoopResult, ReloadWrap, Stats } from '../reloader.js';
import type { HoldWindow } from '../attribution.js';

/** Where a strategy ran: this machine's kernel, or the kernel lab (User-Mode Linux). */
export type Where = 'host' | 'lab';

// `plug` and `nfqueue` are protect's default hold, which ends at the socket swap (the last old
// listener gone, the new one up); `plug-exit` and `nfqueue-exit` are the conservative hold
// (`--release-on exit`: until the reload command exits), the same backends otherwise.
// `nfqueue-normal` is `nfqueue` with protect's loop left at normal priority (`--priority normal`),
// beside which the default (real-time while holding) shows what the priority does to the release.
// `plug-stop-old` and `nfqueue-stop-old` are the short hold (`--stop-old USR1`): HAProxy reloaded
// without -sf, protect holds only around the old process's soft stop, which it sends itself.
export const STRATEGY_NAMES = [
  'baseline',
  'none',
  'drop',
  'plug',
  'plug-exit',
  'plug-stop-old',
  'plug-spawn',
  'nfqueue',
  'nfqueue-exit',
  'nfqueue-normal',
  'nfqueue-stop-old',
  'nfqueue-stop-old-unguarded',
  'haproxy-seamless',
  'migrate-req',
] as const;
export type StrategyName = (typeof STRATEGY_NAMES)[number];

/** Kernel features a strategy cannot do without; the bench runs it in the kernel lab when this kernel lacks one. */
export type KernelFeature = 'sch_plug' | 'sch_prio';

export interface StrategyContext {
  haproxy: HaproxyServer;
  /** the protected frontend port (16000, the seed's) */
  port: number;
  /** argv prefix that runs the synhold CLI: [node, .../cli/main.js] */
  synhold: string[];
  /** environment for every command the strategy runs (SYNHOLD_RUN_DIR on the host) */
  env: NodeJS.ProcessEnv;
  /** this machine's kernel, or the kernel lab's one slow CPU */
  where: Where;
  log(line: string): void;
}

/** How long new connections were held, per reload, and by what measure. */
export interface DrainSummary {
  /** hold start to the signal, ms */
  ms: Stats;
  /** signals sent with connections still in an old listener's accept queue (the drain gave up) */
  signalledWithQueued: number;
  /** signals sent with connections to the port mid-handshake */
  signalledWithHandshakes: number;
  /** those connections, summed over the run */
  leftAtSignal: number;
}

export interface HoldSummary {
  ms: Stats;
  /** From the last old listener's close to the release (synhold's own holds, as protect reports them) */
  swapToReleaseMs?: Stats;
  /** protect --stop-old: the drain before each signal, and the holds whose signal went with connections still on their way in */
  drain?: DrainSummary;
  /** where the numbers come from, for the report's footnotes */
  source: string;
  /** SYNs released / dropped, totals over the run (when the tool reports them) */
  released?: number;
  dropped?: number;
  /** why each hold ended, counted */
  reasons?: Record<string, number>;
  /** why each hold ended, one per reload in order (when the tool says so for every reload) */
  reasonByReload?: string[];
  /** each hold's window on the wall clock, when the tool says when it began (not written out: it places the slow requests) */
  windows?: HoldWindow[];
}

export interface RunRecord {
  loop: ReloadLoopResult;
  /** everything the reload commands printed (HAProxy's and wrappers' stdout + stderr) */
  reloadLog: string;
}

export interface PreparedStrategy {
  /** how each reload runs (undefined: the plain reload command) */
  wrap?: ReloadWrap;
  /** hold durations, for strategies that hold */
  holds?(run: RunRecord): HoldSummary;
  /** undo the set-up (the namespace is deleted afterwards anyway) */
  cleanup(): Promise<void>;
  /** facts the report should show (e.g. which backend synhold chose) */
  notes: string[];
}

export interface Strategy {
  readonly name: StrategyName;
  /** one line for --help and the docs */
  readonly summary: string;
  readonly haproxyMode: HaproxyMode;
  /** false only for the no-reload baseline */
  readonly reloads: boolean;
  readonly kernelNeeds: readonly KernelFeature[];
  /** its own reload interval when --interval is not given (drop: the seed's 1 s) */
  readonly defaultIntervalMs?: number;
  /** throws StrategyUnavailable when it cannot run here (the reason is reported) */
  prepare(ctx: StrategyContext): Promise<PreparedStrategy>;
}

/** This strategy cannot run on this kernel / machine; `message` says why. */
export class StrategyUnavailable extends Error {
  readonly code = 'ERR_STRATEGY_UNAVAILABLE';
  constructor(message: string) {
    super(message);
    this.name = 'StrategyUnavailable';
  }
}

export const noCleanup = async (): Promise<void> => undefined;
