// What the bench's processes hand each other, as files in the bench's work
// directory (a temp dir; shared into the kernel lab, whose guest writes
// through to the host's file system as it goes):
//
//   group-<where>.json      GroupSpec: the strategies one kernel runs, in order
//   spec-<strategy>.json    WorkerSpec: one strategy's run
//   result-<where>-<strategy>.json  WorkerResult
//   progress-<where>.jsonl  ProgressEvent lines, appended by workers as they go,
//                           tailed by the `synhold bench` process for its
//                           progress bar (also for the lab, live)
//   worker-<where>-<strategy>.log  the worker's own stdout/stderr

import { appendFileSync, readFileSync, writeFileSync, renameSync } from 'node:fs';
import type { HoldSummary, StrategyName, Where } from './strategies/strategy.js';
import type { LoadResultJson } from './loadgen.js';
import type { ReloadStopReason, Stats } from './reloader.js';
import type { AbResult } from './ab.js';
import type { WrkResult } from './load/wrk.js';
import type { Attribution, SlowPlacement } from './attribution.js';

/** Where a strategy ran (defined with the strategies, which take it too). */
export type { Where };

export interface LoadPlan {
  concurrency: number;
  /** the load stops after this long... */
  durationMs?: number;
  /** ...or after this many requests... */
  requests?: number;
  /** ...but, with `requests`, not before this many reloads (the seed's full run: >= 1500) */
  minReloads?: number;
  /** hard bound on one strategy's load, whatever the above say */
  capMs: number;
  requestTimeoutMs: number;
  /** requests before the measured run (not counted) */
  warmupRequests: number;
}

export interface WorkerSpec {
  strategy: StrategyName;
  where: Where;
  /** start-to-start reload interval */
  intervalMs: number;
  load: LoadPlan;
  /** run ab with this many requests after the load (the cross-check) */
  abRequests?: number;
  /** then run wrk for this many seconds (the cross-check's second C client) */
  wrkSeconds?: number;
  progressFile: string;
  resultFile: string;
  /** SYNHOLD_RUN_DIR for synhold's state (host: inside the work dir) */
  runDir?: string;
  /** the namespace's name, for the report */
  netns: string;
}

export interface GroupSpec {
  where: Where;
  workDir: string;
  progressFile: string;
  workers: WorkerSpec[];
}

export interface ReloadSummary {
  count: number;
  failed: number;
  ratePerSec: number;
  elapsedMs: number;
  nominalIntervalMs: number;
  intervalMs: Stats;
  durationMs: Stats;
  overruns: number;
  stoppedBy: ReloadStopReason;
  /** the first few failed reloads, one line each */
  failures: string[];
}

export interface WorkerResult {
  strategy: StrategyName;
  where: Where;
  /** uname -r of the kernel it ran on */
  kernel: string;
  cpus: number;
  netns: string;
  haproxyVersion?: string;
  /** could not run here, and why (a kernel feature, a missing tool or backend) */
  skipped?: string;
  /** tried to run and broke */
  error?: string;
  load?: LoadResultJson;
  reloads?: ReloadSummary;
  hold?: HoldSummary;
  /** failed requests charged to the reloads they started during */
  attribution?: Attribution;
  /** the ok requests over SLOW_MS, placed in the reloads (and holds) they started during */
  slow?: SlowPlacement;
  /** the namespace's watched kernel counters that moved during the load (kernel-counters.ts) */
  counters?: Record<string, number>;
  ab?: AbResult;
  wrk?: WrkResult;
  notes: string[];
  elapsedMs: number;
}

export type ProgressEvent =
  | { t: 'start'; where: Where; strategy: StrategyName; kernel: string; plan: LoadPlan; intervalMs: number; reloads: boolean }
  | { t: 'phase'; where: Where; strategy: StrategyName; phase: string }
  | { t: 'load'; where: Where; strategy: StrategyName; elapsedMs: number; requests: number; failed: number; reloads: number }
  | { t: 'done'; where: Where; strategy: StrategyName; skipped?: string; error?: string; requests?: number; failed?: number; reloads?: number };

/** Append one event (open, write, close: the lab's hostfs shows it to the host at once). */
export function emitProgress(file: string, e: ProgressEvent): void {
  try {
    appendFileSync(file, `${JSON.stringify(e)}\n`);
  } catch {
    /* progress is best effort */
  }
}

export function writeJsonFile(path: string, value: unknown): void {
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(value)}\n`);
  renameSync(tmp, path);
}

export function readJsonFile<T>(path: string): T | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch {
    return undefined;
  }
}
