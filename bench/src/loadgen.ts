// The bench's load generator: one NEW TCP connection per request, like the
// seed's `ab` run (no keep-alive), because the failure being measured happens
// at connection establishment: a SYN that lands in the accept queue of the
// HAProxy process that is about to close its listener gets that connection
// reset. A keep-alive client would hide exactly that.
//
// Why not just `ab`: ab aborts a run after ~10 connect errors even with -r, so
// it cannot measure an unprotected reload loop at concurrency 50 (issue 5), and
// it does not tell a RST from a refusal from a timeout. This generator records
// every request's outcome and latency and never gives up early.
//
// Outcomes (exactly one per finished request):
//   ok          status 200 and body === expectBody ("pong")
//   reset       ECONNRESET / EPIPE at any stage (the seed's failure mode)
//   refused     ECONNREFUSED (nobody listening: e.g. between old and new process)
//   timeout     no complete response within requestTimeoutMs (default 5 s), or the
//               kernel gave up connecting (ETIMEDOUT). A DROPPED SYN is NOT a
//               timeout by itself: the kernel retransmits it (1 s, then 2 s, 3 s…
//               with this kernel's tcp_syn_linear_timeouts), so such a request
//               shows up as an ok one with ~1 s latency — the seed's Figure 2.
//   badResponse anything else: non-200 (HAProxy's 503 when the backend is gone),
//               wrong body, truncated/empty/oversized response, other local errors
//               (e.g. EADDRNOTAVAIL when ephemeral ports run out); `details`
//               counts which.
//
// Latency: from just before connect() to the response's end (the server's FIN:
// HTTP/1.0, or 1.1 with Connection: close, so the server closes first and the
// TIME_WAIT stays on its side, not eating this client's ephemeral ports).
//
// Bounded: stops starting requests after `requests` or `durationMs`, whichever
// comes first, waits for the ones in flight (each bounded by requestTimeoutMs),
// and has a hard `deadlineMs` after which every socket still open is destroyed
// and counted as `aborted`.
//
// How (bench/src/load/): the requests run in engines (load/engine.ts) over
// bare libuv TCP handles: a pre-built request, one shared read buffer, one
// timeout scan per engine instead of a timer per request. A run of SMALL_RUN
// requests or more (or bounded by time only) runs its engines in worker
// threads (load/thread.ts), which send their records back in batches
// (load/batch.ts), so the thread that called runLoad (in the bench, also the
// one that spawns a reload every 100 ms) never delays a request, and the
// generator uses every CPU. A small run (a readiness probe, a warm-up) runs on
// the calling thread: a worker thread takes tens of ms to start.
// The closed loop runs, by default, on the native engine instead
// (load/native.ts: bench/native/loadgen-engine.c, epoll threads in one child
// process, the same outcomes, records and stop rules) when `npm run build` has
// built it and this is Linux: on the bench's 2-CPU host the client's CPU per
// request is what limits the rate it drives, and the C engine needs half the
// JS engine's. Without the binary, runLoad says so in one line (once per
// process, and in result.generator.fallback) and runs the JS engines. The open
// loop, and runs below SMALL_RUN, always run on the JS engine.
// load/compare.ts holds the generator against ab and wrk on the bench's pair.

import { Worker } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { availableParallelism } from 'node:os';
import { isIP } from 'node:net';
import { checkTarget } from './target.js';
import { newLatencyHistogram, recordMs, summarizeMs, encodeHistogram, type Histogram, type LatencySummaryMs } from './histogram.js';
import { OUTCOMES, type Outcome } from './load/response.js';
import {
  Engine,
  CTL_INFLIGHT,
  CTL_REASON,
  STOP_DEADLINE,
  STOP_DURATION,
  STOP_REQUESTS,
  STOP_SIGNAL,
  handleBinding,
  monoOffset,
  newControl,
  requestStop,
  type EngineConfig,
  type OpenLoopStats,
  type Transport,
} from './load/engine.js';
import { codeOutcome, codeTag, type RecordBatch } from './load/batch.js';
import { expectation } from './load/response.js';
import { nativeEngineProblem, startNative, NATIVE_ENGINE_PATH } from './load/native.js';
import type { FromThread, ThreadData, ToThread } from './load/thread.js';

export { OUTCOMES, FAILURE_OUTCOMES, classifyError, parseResponse } from './load/response.js';
export type { Outcome, FailureOutcome, ParsedResponse } from './load/response.js';
export type { Transport } from './load/engine.js';
export { NATIVE_ENGINE_PATH, nativeEngineProblem } from './load/native.js';

/** One request, for timeline plots (times in ms; startMs relative to the run's start). */
export interface TimelineRecord {
  startMs: number;
  latencyMs: number;
  outcome: Outcome;
  /** error code or bad-response reason, only on failures */
  detail?: string;
}

export interface LoadProgress {
  elapsedMs: number;
  requests: number;
  ok: number;
  failed: number;
  inFlight: number;
}

export interface LoadOptions {
  /** IP literal: 127.0.0.0/8, ::1, "localhost", or a namespace-local address (see namespaceLocal). */
  host: string;
  port: number;
  /** The caller asserts `host` is inside a network namespace the bench created (see target.ts). */
  namespaceLocal?: boolean;
  /** Source address to connect from (e.g. the seed's link-local client address). */
  localAddress?: string;

  /** "closed" (default): `concurrency` workers, each starts its next request when the last ends.
   * "open": requests start at a fixed `rate` whatever the responses do. */
  mode?: 'closed' | 'open';
  /** Closed loop: simultaneous requests (default 50, the seed's ab -c). */
  concurrency?: number;
  /** Open loop: requests per second. */
  rate?: number;
  /** Open loop: cap on requests in flight; a request due while at the cap is not
   * started and counted in `open.missed` (default 1000). */
  maxInFlight?: number;
  /** Open loop: a request started more than this after its due time counts as late (default 10 ms). */
  lateThresholdMs?: number;

  /** Stop after this many requests have been started… */
  requests?: number;
  /** …or after this long (ms), whichever first. At least one of the two is required. */
  durationMs?: number;
  /** Hard deadline for the whole run, in-flight requests included (default:
   * durationMs + requestTimeoutMs + 2 s, or 10 min when only `requests` bounds the run). */
  deadlineMs?: number;
  /** Per request: connect start to complete response (default 5000 ms; checked
   * every requestTimeoutMs / 10, at most every 50 ms, so a timeout ends up to that much later). */
  requestTimeoutMs?: number;

  httpVersion?: '1.0' | '1.1';
  path?: string;
  hostHeader?: string;
  /** Body an ok response must have (default "pong"); null accepts any 200. */
  expectBody?: string | null;

  /** Keep one TimelineRecord per request (true: up to 2,000,000; or give a limit;
   * failuresOnly: only failed requests, to place failures in time on a long run;
   * with it, slowMs: ok requests that took at least this long too, to place the tail). */
  timeline?: boolean | { limit: number; failuresOnly?: boolean; slowMs?: number };

  /** Threads running the requests: the JS engine's worker threads (0: on the
   * calling thread) or the native engine's epoll threads. Default:
   * (JS) defaultThreads(), or 0 for a run bounded below SMALL_RUN requests and
   * for the open loop; (native) defaultNativeThreads(). The closed loop's
   * concurrency is split between them; the open loop always runs on one. */
  threads?: number;
  /** "handle" (default where this Node has it): libuv TCP handles through Node's
   * tcp_wrap binding; "socket": net.Socket, slower, the fallback. The JS
   * engine's: giving one (not "auto") picks the JS engine. */
  transport?: 'auto' | Transport;
  /** Which engine runs the requests. "auto" (default): the native engine
   * (bench/native/loadgen-engine.c, `threads` epoll threads in one child
   * process) for a closed loop of SMALL_RUN requests or more (or bounded by time
   * only, and not on the calling thread: `threads` 0, nor a `transport` asked
   * for) when it is built and this is Linux, else the JS engine ("js": on the
   * calling thread or in `threads` worker threads); when only the missing
   * binary or the platform stands in the way, the reason is in
   * result.generator.fallback and said in one line on stderr (once per
   * process). "native": that engine (at least one thread) or an error; the open
   * loop cannot have it. */
  engine?: 'auto' | EngineKind;
  /** The native engine's binary (default: the build's, NATIVE_ENGINE_PATH). */
  nativeEnginePath?: string;

  /** Stop starting new requests (in-flight ones finish). */
  signal?: AbortSignal;
  onProgress?: (p: LoadProgress) => void;
  progressIntervalMs?: number;
}

export type StopReason = 'requests' | 'duration' | 'deadline' | 'signal';
export type EngineKind = 'native' | 'js';

export interface LoadResult {
  mode: 'closed' | 'open';
  target: { host: string; port: number; localAddress?: string };
  concurrency?: number;
  /** Wall-clock (epoch ms) when the run started. */
  startedAt: number;
  elapsedMs: number;
  stoppedBy: StopReason;
  /** Requests that finished with an outcome. */
  requests: number;
  outcomes: Record<Outcome, number>;
  failed: number;
  /** Counts by error code / bad-response reason (failures, plus notes like "reset-after-response"). */
  details: Record<string, number>;
  /** In flight at the hard deadline: destroyed, no outcome. */
  aborted: number;
  /** Latency of ok requests. */
  latency: Histogram;
  /** Time to failure of failed requests. */
  failedLatency: Histogram;
  /** Finished requests per second. */
  throughput: number;
  open?: OpenLoopStats;
  timeline?: TimelineRecord[];
  timelineDropped?: number;
  /** How the requests ran: the engine; its threads (JS: worker threads, 0 the
   * calling thread; native: epoll threads in its one process); the JS engine's
   * transport; and why "auto" did not pick the native engine, if it could not. */
  generator?: { engine: EngineKind; threads: number; transport?: Transport; fallback?: string };
}

/**
 * Worker threads for a closed loop of SMALL_RUN requests or more: one per CPU,
 * as wrk advises for its own threads. Measured with load/compare.ts on the
 * bench's 2-CPU host (concurrency 50): one thread waits on the servers with
 * about a third of a CPU idle, as ab and a one-thread wrk do; two drove 4-20%
 * more than one; three a few % more again, at more CPU per request; four less.
 * Measured again in one run of 9 rounds (docs/BENCHMARKS.md, the load generator's
 * run 3): three drove 0.4% more than two (11,951 against 11,899 req/s), within the
 * rounds' spread, at 1.6 µs more user CPU per request: not worth a default that
 * differs from wrk's advice.
 */
export function defaultThreads(): number {
  return availableParallelism();
}
/**
 * The native engine's epoll threads: half the CPUs, at least one. Measured
 * with load/compare.ts on the bench's 2-CPU host (concurrency 50, 2 rounds of
 * 5 s): one thread drove 12,554 req/s at 5.1 + 31.8 µs of CPU per request and
 * 46% of a CPU, two 10,945 at 6.4 + 40.6 µs: a C thread waits on the servers
 * with half a CPU idle, and a second one only adds cross-CPU wake-ups and
 * takes CPU from the servers. (The rounds of the final comparison:
 * docs/bench/load-compare-4.json.)
 */
export function defaultNativeThreads(): number {
  return Math.max(1, Math.floor(availableParallelism() / 2));
}
/** Runs bounded below this many requests run on the calling thread. */
export const SMALL_RUN = 1000;

function buildPayload(o: LoadOptions): Buffer {
  const path = o.path ?? '/';
  const host = o.hostHeader ?? 'x';
  const req =
    (o.httpVersion ?? '1.0') === '1.0' ? `GET ${path} HTTP/1.0\r\nHost: ${host}\r\n\r\n` : `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`;
  return Buffer.from(req, 'latin1');
}

const STOP_REASONS: Record<number, StopReason> = {
  [STOP_REQUESTS]: 'requests',
  [STOP_DURATION]: 'duration',
  [STOP_DEADLINE]: 'deadline',
  [STOP_SIGNAL]: 'signal',
};

/** The run's tally: counts, histograms, timeline; fed one finished request at a time, from any engine. */
class Tally {
  finished = 0;
  readonly outcomes: Record<Outcome, number> = { ok: 0, reset: 0, refused: 0, timeout: 0, badResponse: 0 };
  readonly details: Record<string, number> = {};
  readonly latency = newLatencyHistogram();
  readonly failedLatency = newLatencyHistogram();
  readonly timeline: TimelineRecord[] = [];
  timelineDropped = 0;

  constructor(
    private readonly timelineLimit: number,
    private readonly failuresOnly: boolean,
    /** with failuresOnly: ok requests at least this slow are kept too */
    private readonly slowMs: number,
  ) {}

  /** `tag`: the failure's detail, or the note on an ok request. */
  add(startMs: number, latencyMs: number, outcome: number, tag: string | undefined): void {
    this.finished++;
    const name = OUTCOMES[outcome]!;
    this.outcomes[name]++;
    if (outcome === 0) recordMs(this.latency, latencyMs);
    else recordMs(this.failedLatency, latencyMs);
    if (tag !== undefined) this.details[tag] = (this.details[tag] ?? 0) + 1;
    if (this.timelineLimit > 0 && !(this.failuresOnly && outcome === 0 && latencyMs < this.slowMs)) {
      if (this.timeline.length < this.timelineLimit) {
        const rec: TimelineRecord = { startMs, latencyMs, outcome: name };
        if (outcome !== 0 && tag !== undefined) rec.detail = tag;
        this.timeline.push(rec);
      } else this.timelineDropped++;
    }
  }

  addBatch(b: RecordBatch, tags: string[]): void {
    tags.push(...b.newTags);
    const d = b.data;
    for (let i = 0; i < 3 * b.n; i += 3) {
      const tag = codeTag(d[i + 2]!);
      this.add(d[i]!, d[i + 1]!, codeOutcome(d[i + 2]!), tag < 0 ? undefined : tags[tag]);
    }
  }
}

/** One engine as runLoad drives it, on this thread, in a worker, or in the native engine's process. */
interface EngineRunner {
  /** resolves when the engine has ended by itself (not after abort) */
  done: Promise<void>;
  go(t0: number): void;
  /** runLoad's signal fired (the JS engines see it in the control block) */
  stop?(): void;
  /** the hard deadline; resolves with how many requests it destroyed */
  abort(): Promise<number>;
  openStats(): OpenLoopStats | undefined;
  dispose(): Promise<void>;
}

function inlineRunner(cfg: EngineConfig, ctl: Int32Array, tally: Tally, offset: number): EngineRunner {
  const engine: Engine = new Engine(cfg, ctl, {
    record: (startMs: number, latencyMs: number, outcome: number, tag: number): void =>
      tally.add(startMs, latencyMs, outcome, tag < 0 ? undefined : engine.tags[tag]),
  });
  let resolveDone!: () => void;
  const done = new Promise<void>((r) => (resolveDone = r));
  return {
    done,
    go: (t0) => engine.start(t0, offset, resolveDone),
    abort: () => Promise.resolve(engine.abort()),
    openStats: () => engine.openStats,
    dispose: () => Promise.resolve(),
  };
}

const THREAD_URL = new URL('./load/thread.js', import.meta.url);
const THREAD_START_MS = 30_000;

/** Start a worker thread for the engine; resolves once it is ready to go. */
async function threadRunner(cfg: EngineConfig, ctl: Int32Array, tally: Tally): Promise<EngineRunner> {
  const data: ThreadData = { cfg, ctl };
  const worker = new Worker(THREAD_URL, { workerData: data });
  const tags: string[] = [];
  let open: OpenLoopStats | undefined;
  let aborted = 0;
  let finished = false;
  let failure: Error | undefined;
  let resolveReady!: () => void;
  let rejectReady!: (e: Error) => void;
  const ready = new Promise<void>((res, rej) => {
    resolveReady = res;
    rejectReady = rej;
  });
  let resolveDone!: () => void;
  let rejectDone!: (e: Error) => void;
  const done = new Promise<void>((res, rej) => {
    resolveDone = res;
    rejectDone = rej;
  });
  done.catch(() => undefined);
  const fail = (e: Error): void => {
    if (finished) return;
    finished = true;
    failure = e;
    rejectReady(e);
    rejectDone(e);
  };
  worker.on('message', (m: FromThread) => {
    if (m.t === 'records') tally.addBatch(m, tags);
    else if (m.t === 'ready') resolveReady();
    else if (m.t === 'done') {
      finished = true;
      aborted = m.aborted;
      open = m.open;
      resolveDone();
    }
  });
  worker.on('error', (e) => fail(new Error(`load generator thread failed: ${e.stack ?? e.message}`)));
  worker.on('exit', (code) => fail(new Error(`load generator thread exited (code ${code}) before it was done`)));
  const post = (m: ToThread): void => worker.postMessage(m);
  // bounded: a thread that cannot even load its modules in this long is broken
  const startTimer = setTimeout(() => fail(new Error(`load generator thread not ready after ${THREAD_START_MS} ms`)), THREAD_START_MS);
  try {
    await ready;
  } catch (e) {
    await worker.terminate();
    throw e;
  } finally {
    clearTimeout(startTimer);
  }
  return {
    done,
    go: (t0) => post({ t: 'go', t0 }),
    abort: async () => {
      if (finished) return failure ? 0 : aborted;
      post({ t: 'abort' });
      // A thread that does not answer within a second is stuck: end it and
      // count what it had in flight.
      const answered = await Promise.race([done.then(() => true).catch(() => false), new Promise<boolean>((r) => setTimeout(() => r(false), 1000).unref())]);
      if (answered) return aborted;
      const n = Atomics.load(ctl, CTL_INFLIGHT + cfg.index);
      finished = true;
      await worker.terminate();
      return n;
    },
    openStats: () => open,
    dispose: async () => {
      finished = true;
      await worker.terminate();
    },
  };
}

/** The native engine's process: all of the closed loop's shares, one epoll thread each. */
async function nativeRunner(
  cfg: Omit<EngineConfig, 'index' | 'concurrency'>,
  shares: number[],
  path: string,
  ctl: Int32Array,
  tally: Tally,
): Promise<EngineRunner> {
  const engine = await startNative(
    {
      host: cfg.host,
      port: cfg.port,
      ...(cfg.localAddress ? { localAddress: cfg.localAddress } : {}),
      payload: cfg.payload,
      expect: expectation(cfg.expectBody),
      timeoutMs: cfg.timeoutMs,
      maxRequests: cfg.maxRequests,
      durationMs: cfg.durationMs,
      concurrency: shares,
      path,
    },
    (startMs, latencyMs, outcome, tag) => {
      tally.add(startMs, latencyMs, outcome, tag);
      // the progress figure, as the JS engines publish theirs (one slot for the whole process)
      ctl[CTL_INFLIGHT] = engine.inFlight();
    },
  );
  return {
    // the engine's own stop reason, unless runLoad's came first (requestStop keeps the first)
    done: engine.done.then((reason) => {
      if (reason !== 0) requestStop(ctl, reason);
      ctl[CTL_INFLIGHT] = 0;
    }),
    go: (t0) => engine.go(t0),
    stop: () => engine.stop(),
    abort: () => engine.abort(),
    openStats: () => undefined,
    dispose: () => engine.dispose(),
  };
}

let fallbackSaid = false;

/** A worker thread per engine, all ready to go; none left running if one fails to start. */
async function startThreads(configs: EngineConfig[], ctl: Int32Array, tally: Tally): Promise<EngineRunner[]> {
  const started = await Promise.allSettled(configs.map((c) => threadRunner(c, ctl, tally)));
  const runners = started.filter((s): s is PromiseFulfilledResult<EngineRunner> => s.status === 'fulfilled').map((s) => s.value);
  const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) {
    await Promise.all(runners.map((r) => r.dispose()));
    throw failed.reason;
  }
  return runners;
}

/** Run a bounded load. Rejects only on invalid options, a refused target, or a generator thread that failed. */
export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const host = checkTarget(o.host, { namespaceLocal: o.namespaceLocal ?? false });
  if (!Number.isInteger(o.port) || o.port <= 0 || o.port > 65535) throw new Error(`bad port ${o.port}`);
  if (o.requests === undefined && o.durationMs === undefined) {
    throw new Error('runLoad: give `requests` or `durationMs` (the run must stop by itself)');
  }
  const mode = o.mode ?? 'closed';
  const concurrency = o.concurrency ?? 50;
  if (mode === 'closed' && (!Number.isInteger(concurrency) || concurrency < 1)) throw new Error('concurrency must be >= 1');
  if (mode === 'open' && !(o.rate !== undefined && o.rate > 0)) throw new Error('open loop needs rate > 0');
  if (o.threads !== undefined && (!Number.isInteger(o.threads) || o.threads < 0)) throw new Error('threads must be an integer >= 0');
  const maxRequests = o.requests ?? Number.POSITIVE_INFINITY;
  const durationMs = o.durationMs ?? Number.POSITIVE_INFINITY;
  const timeoutMs = o.requestTimeoutMs ?? 5000;
  const deadlineMs = o.deadlineMs ?? (o.durationMs !== undefined ? o.durationMs + timeoutMs + 2000 : 600_000);
  const timelineLimit = o.timeline === undefined || o.timeline === false ? 0 : o.timeline === true ? 2_000_000 : o.timeline.limit;
  const timelineFailuresOnly = typeof o.timeline === 'object' && o.timeline.failuresOnly === true;
  const timelineSlowMs = typeof o.timeline === 'object' ? (o.timeline.slowMs ?? Number.POSITIVE_INFINITY) : Number.POSITIVE_INFINITY;
  const transportOpt = o.transport ?? 'auto';
  const transport: Transport = transportOpt === 'auto' ? (handleBinding() ? 'handle' : 'socket') : transportOpt;
  if (transport === 'handle' && !handleBinding()) throw new Error('transport "handle": this Node.js has no tcp_wrap binding; use "socket"');

  const small = maxRequests < SMALL_RUN || mode === 'open';
  const engineOpt = o.engine ?? 'auto';
  const nativePath = o.nativeEnginePath ?? NATIVE_ENGINE_PATH;
  let engineKind: EngineKind = 'js';
  let fallback: string | undefined;
  if (engineOpt === 'native') {
    if (mode === 'open') throw new Error('engine "native": the open loop runs on the JS engine only (engine "auto" or "js")');
    if (transportOpt !== 'auto') throw new Error(`engine "native": transport "${transportOpt}" is the JS engine's`);
    const problem = nativeEngineProblem(nativePath);
    if (problem !== undefined) throw new Error(`engine "native": ${problem}`);
    engineKind = 'native';
  } else if (engineOpt === 'auto' && mode === 'closed' && !small && transportOpt === 'auto' && o.threads !== 0) {
    fallback = nativeEngineProblem(nativePath);
    if (fallback === undefined) engineKind = 'native';
    else if (!fallbackSaid) {
      fallbackSaid = true;
      process.stderr.write(`load generator: ${fallback}; running the JS engine\n`);
    }
  }
  const threads =
    engineKind === 'native'
      ? Math.max(1, Math.min(o.threads || defaultNativeThreads(), concurrency))
      : mode === 'open'
        ? Math.min(o.threads ?? 0, 1)
        : Math.min(o.threads ?? (small ? 0 : defaultThreads()), concurrency);
  const engines = Math.max(1, threads);
  const payload = buildPayload(o);
  const base: Omit<EngineConfig, 'index' | 'concurrency'> = {
    host,
    family: isIP(host) === 6 ? 6 : 4,
    port: o.port,
    ...(o.localAddress ? { localAddress: o.localAddress } : {}),
    payload: new Uint8Array(payload),
    expectBody: o.expectBody === undefined ? 'pong' : o.expectBody,
    timeoutMs,
    maxRequests,
    durationMs,
    transport,
    mode,
    ...(mode === 'open' ? { open: { rate: o.rate!, maxInFlight: o.maxInFlight ?? 1000, lateThresholdMs: o.lateThresholdMs ?? 10 } } : {}),
  };
  // The closed loop's concurrency, split as evenly as it goes.
  const configs: EngineConfig[] = Array.from({ length: engines }, (_, index) => ({
    ...base,
    index,
    concurrency: mode === 'closed' ? Math.floor(concurrency / engines) + (index < concurrency % engines ? 1 : 0) : 0,
  }));

  const ctl = newControl(engines);
  const tally = new Tally(timelineLimit, timelineFailuresOnly, timelineSlowMs);
  const offset = monoOffset();
  const mono = (): number => performance.now() + offset;
  const runners: EngineRunner[] =
    engineKind === 'native'
      ? [
          await nativeRunner(
            base,
            configs.map((c) => c.concurrency),
            nativePath,
            ctl,
            tally,
          ),
        ]
      : threads === 0
        ? [inlineRunner(configs[0]!, ctl, tally, offset)]
        : await startThreads(configs, ctl, tally);

  const inFlight = (): number => {
    let n = 0;
    for (let i = 0; i < engines; i++) n += Atomics.load(ctl, CTL_INFLIGHT + i);
    return n;
  };
  const onAbort = (): void => {
    requestStop(ctl, STOP_SIGNAL);
    for (const r of runners) r.stop?.();
  };
  if (o.signal?.aborted) onAbort();
  o.signal?.addEventListener('abort', onAbort, { once: true });

  const startedAt = Date.now();
  const t0 = mono();
  const elapsed = (): number => mono() - t0;
  let progressTimer: NodeJS.Timeout | undefined;
  if (o.onProgress) {
    const cb = o.onProgress;
    progressTimer = setInterval(() => {
      cb({ elapsedMs: elapsed(), requests: tally.finished, ok: tally.outcomes.ok, failed: tally.finished - tally.outcomes.ok, inFlight: inFlight() });
    }, o.progressIntervalMs ?? 1000);
    progressTimer.unref();
  }

  // Hard deadline: whatever is still open is destroyed and counted as aborted.
  let deadlineTimer: NodeJS.Timeout | undefined;
  let aborted = 0;
  const deadline = new Promise<'deadline'>((resolve) => {
    deadlineTimer = setTimeout(() => resolve('deadline'), deadlineMs);
  });
  let ended: 'done' | 'deadline';
  let elapsedMs: number;
  try {
    for (const r of runners) r.go(t0);
    ended = await Promise.race([Promise.all(runners.map((r) => r.done)).then(() => 'done' as const), deadline]);
    if (ended === 'deadline') {
      requestStop(ctl, STOP_DEADLINE);
      // Count what each engine destroys: the sockets' own ends would come
      // later, after the result has been returned.
      for (const n of await Promise.all(runners.map((r) => r.abort()))) aborted += n;
    }
    elapsedMs = elapsed();
  } finally {
    clearTimeout(deadlineTimer);
    if (progressTimer) clearInterval(progressTimer);
    o.signal?.removeEventListener('abort', onAbort);
    await Promise.all(runners.map((r) => r.dispose()));
  }
  const finished = tally.finished;
  if (o.onProgress) {
    o.onProgress({
      elapsedMs,
      requests: finished,
      ok: tally.outcomes.ok,
      failed: finished - tally.outcomes.ok,
      inFlight: ended === 'deadline' ? 0 : inFlight(),
    });
  }

  const result: LoadResult = {
    mode,
    target: { host, port: o.port, ...(o.localAddress ? { localAddress: o.localAddress } : {}) },
    startedAt,
    elapsedMs,
    stoppedBy: STOP_REASONS[Atomics.load(ctl, CTL_REASON)] ?? 'requests',
    requests: finished,
    outcomes: tally.outcomes,
    failed: finished - tally.outcomes.ok,
    details: tally.details,
    aborted,
    latency: tally.latency,
    failedLatency: tally.failedLatency,
    throughput: elapsedMs > 0 ? (finished * 1000) / elapsedMs : 0,
    generator: engineKind === 'native' ? { engine: 'native', threads } : { engine: 'js', threads, transport, ...(fallback ? { fallback } : {}) },
  };
  if (mode === 'closed') result.concurrency = concurrency;
  const openStats = runners[0]!.openStats();
  if (mode === 'open' && openStats) result.open = openStats;
  if (timelineLimit > 0) {
    result.timeline = tally.timeline;
    result.timelineDropped = tally.timelineDropped;
  }
  return result;
}

/** JSON-safe form of a LoadResult (histograms as summaries + HDR base64). */
export interface LoadResultJson extends Omit<LoadResult, 'latency' | 'failedLatency'> {
  latencyMs: LatencySummaryMs;
  failedLatencyMs: LatencySummaryMs;
  latencyHdr: string;
  failedLatencyHdr: string;
}

export function loadResultToJson(r: LoadResult, opts: { withTimeline?: boolean } = {}): LoadResultJson {
  const { latency, failedLatency, timeline, ...rest } = r;
  const out: LoadResultJson = {
    ...rest,
    latencyMs: summarizeMs(latency),
    failedLatencyMs: summarizeMs(failedLatency),
    latencyHdr: encodeHistogram(latency),
    failedLatencyHdr: encodeHistogram(failedLatency),
  };
  if (opts.withTimeline && timeline) out.timeline = timeline;
  return out;
}
