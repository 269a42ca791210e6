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

import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { checkTarget } from './target.js';
import { newLatencyHistogram, recordMs, summarizeMs, encodeHistogram, type Histogram, type LatencySummaryMs } from './histogram.js';

export type Outcome = 'ok' | 'reset' | 'refused' | 'timeout' | 'badResponse';
export const OUTCOMES: readonly Outcome[] = ['ok', 'reset', 'refused', 'timeout', 'badResponse'];
export type FailureOutcome = Exclude<Outcome, 'ok'>;
export const FAILURE_OUTCOMES: readonly FailureOutcome[] = ['reset', 'refused', 'timeout', 'badResponse'];

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
  /** Per request: connect start to complete response (default 5000 ms). */
  requestTimeoutMs?: number;

  httpVersion?: '1.0' | '1.1';
  path?: string;
  hostHeader?: string;
  /** Body an ok response must have (default "pong"); null accepts any 200. */
  expectBody?: string | null;

  /** Keep one TimelineRecord per request (true: up to 2,000,000; or give a limit;
   * failuresOnly: only failed requests, to place failures in time on a long run). */
  timeline?: boolean | { limit: number; failuresOnly?: boolean };

  /** Stop starting new requests (in-flight ones finish). */
  signal?: AbortSignal;
  onProgress?: (p: LoadProgress) => void;
  progressIntervalMs?: number;
}

export type StopReason = 'requests' | 'duration' | 'deadline' | 'signal';

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
  open?: {
    rate: number;
    scheduled: number;
    started: number;
    missed: number;
    late: number;
    maxStartLagMs: number;
    maxInFlightSeen: number;
  };
  timeline?: TimelineRecord[];
  timelineDropped?: number;
}

const MAX_RESPONSE_BYTES = 64 * 1024;

interface RequestSpec {
  host: string;
  port: number;
  localAddress: string | undefined;
  payload: Buffer;
  timeoutMs: number;
  expectBody: string | null;
}

interface RequestOutcome {
  outcome: Outcome;
  detail?: string;
  note?: string;
  startMs: number;
  latencyMs: number;
}

/** Classify a socket error. */
export function classifyError(code: string | undefined): Outcome {
  switch (code) {
    case 'ECONNREFUSED':
      return 'refused';
    case 'ECONNRESET':
    case 'EPIPE':
      return 'reset';
    case 'ETIMEDOUT':
      return 'timeout';
    default:
      return 'badResponse';
  }
}

export interface ParsedResponse {
  complete: boolean;
  status?: number;
  body?: string;
  reason?: string;
}

/** Parse a whole HTTP/1.x response (as read until the server's FIN). */
export function parseResponse(buf: Buffer): ParsedResponse {
  const sep = buf.indexOf('\r\n\r\n');
  if (buf.length === 0) return { complete: false, reason: 'empty' };
  if (sep < 0) return { complete: false, reason: 'no-header-end' };
  const head = buf.subarray(0, sep).toString('latin1');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
  if (!m) return { complete: false, reason: 'bad-status-line' };
  const status = Number(m[1]);
  let body = buf.subarray(sep + 4);
  const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
  if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
    const dec = decodeChunked(body);
    if (!dec) return { complete: false, status, reason: 'truncated' };
    body = dec;
  } else if (cl) {
    const n = Number(cl[1]);
    if (body.length < n) return { complete: false, status, reason: 'truncated' };
    body = body.subarray(0, n);
  }
  return { complete: true, status, body: body.toString('utf8') };
}

function decodeChunked(b: Buffer): Buffer | null {
  const parts: Buffer[] = [];
  let i = 0;
  for (let guard = 0; guard < 10_000; guard++) {
    const eol = b.indexOf('\r\n', i);
    if (eol < 0) return null;
    const size = parseInt(b.subarray(i, eol).toString('latin1'), 16);
    if (!Number.isFinite(size)) return null;
    if (size === 0) return Buffer.concat(parts);
    if (eol + 2 + size > b.length) return null;
    parts.push(b.subarray(eol + 2, eol + 2 + size));
    i = eol + 2 + size + 2;
  }
  return null;
}

/** Has a response buffer got everything its headers promised? (for a RST right after it) */
function isCompleteOk(buf: Buffer, expectBody: string | null): boolean {
  const p = parseResponse(buf);
  return p.complete && p.status === 200 && (expectBody === null || p.body === expectBody);
}

/**
 * One request on a fresh connection. Never rejects. `live` tracks the socket so
 * the hard deadline can destroy it.
 */
function oneRequest(spec: RequestSpec, live: Set<Socket>, isAborted: () => boolean): Promise<RequestOutcome | null> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const chunks: Buffer[] = [];
    let size = 0;
    let connected = false;
    let settled = false;
    const sock = connect({
      host: spec.host,
      port: spec.port,
      ...(spec.localAddress ? { localAddress: spec.localAddress } : {}),
      noDelay: true,
    });
    live.add(sock);
    const finish = (outcome: Outcome, detail?: string, note?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      live.delete(sock);
      sock.destroy();
      if (isAborted()) {
        resolve(null);
        return;
      }
      const r: RequestOutcome = { outcome, startMs: t0, latencyMs: performance.now() - t0 };
      if (detail !== undefined) r.detail = detail;
      if (note !== undefined) r.note = note;
      resolve(r);
    };
    const timer = setTimeout(() => finish('timeout', connected ? 'timeout-response' : 'timeout-connect'), spec.timeoutMs);
    sock.on('connect', () => {
      connected = true;
      sock.write(spec.payload);
    });
    sock.on('data', (d: Buffer) => {
      size += d.length;
      if (size > MAX_RESPONSE_BYTES) {
        finish('badResponse', 'too-large');
        return;
      }
      chunks.push(d);
    });
    sock.on('end', () => {
      const p = parseResponse(Buffer.concat(chunks));
      if (!p.complete) finish('badResponse', p.reason ?? 'incomplete');
      else if (p.status !== 200) finish('badResponse', `status-${p.status}`);
      else if (spec.expectBody !== null && p.body !== spec.expectBody) finish('badResponse', 'wrong-body');
      else finish('ok');
    });
    sock.on('error', (e: NodeJS.ErrnoException) => {
      const code = e.code ?? 'EUNKNOWN';
      const outcome = classifyError(code);
      // A RST that arrives after the full, correct response (some servers reset
      // on close when unread data remains) did not cost the user anything: count
      // it as ok, but keep a note so it is visible.
      if (outcome === 'reset' && isCompleteOk(Buffer.concat(chunks), spec.expectBody)) {
        finish('ok', undefined, 'reset-after-response');
      } else {
        finish(outcome, code);
      }
    });
    // Safety net: 'close' without 'end' or 'error' should not happen, but a
    // request must never hang past its timeout, nor stay unclassified.
    sock.on('close', () => finish('badResponse', 'closed'));
  });
}

function buildPayload(o: LoadOptions): Buffer {
  const path = o.path ?? '/';
  const host = o.hostHeader ?? 'x';
  const req =
    (o.httpVersion ?? '1.0') === '1.0' ? `GET ${path} HTTP/1.0\r\nHost: ${host}\r\n\r\n` : `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`;
  return Buffer.from(req, 'latin1');
}

/** Run a bounded load. Rejects only on invalid options or a refused target. */
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
  const maxRequests = o.requests ?? Number.POSITIVE_INFINITY;
  const durationMs = o.durationMs ?? Number.POSITIVE_INFINITY;
  const timeoutMs = o.requestTimeoutMs ?? 5000;
  const deadlineMs = o.deadlineMs ?? (o.durationMs !== undefined ? o.durationMs + timeoutMs + 2000 : 600_000);
  const timelineLimit = o.timeline === undefined || o.timeline === false ? 0 : o.timeline === true ? 2_000_000 : o.timeline.limit;
  const timelineFailuresOnly = typeof o.timeline === 'object' && o.timeline.failuresOnly === true;

  const spec: RequestSpec = {
    host,
    port: o.port,
    localAddress: o.localAddress,
    payload: buildPayload(o),
    timeoutMs,
    expectBody: o.expectBody === undefined ? 'pong' : o.expectBody,
  };

  const outcomes: Record<Outcome, number> = { ok: 0, reset: 0, refused: 0, timeout: 0, badResponse: 0 };
  const details: Record<string, number> = {};
  const latency = newLatencyHistogram();
  const failedLatency = newLatencyHistogram();
  const timeline: TimelineRecord[] = [];
  let timelineDropped = 0;
  const live = new Set<Socket>();
  let finished = 0;
  let inFlight = 0;
  let started = 0;
  let aborted = 0;
  let hardStopped = false;
  let stopReason: StopReason | null = null;

  const startedAt = Date.now();
  const t0 = performance.now();

  const record = (r: RequestOutcome | null): void => {
    inFlight--;
    if (r === null) return; // destroyed by the hard deadline: counted there

    finished++;
    outcomes[r.outcome]++;
    if (r.outcome === 'ok') recordMs(latency, r.latencyMs);
    else recordMs(failedLatency, r.latencyMs);
    const key = r.detail ?? r.note;
    if (key !== undefined) details[key] = (details[key] ?? 0) + 1;
    if (timelineLimit > 0 && !(timelineFailuresOnly && r.outcome === 'ok')) {
      if (timeline.length < timelineLimit) {
        const rec: TimelineRecord = { startMs: r.startMs - t0, latencyMs: r.latencyMs, outcome: r.outcome };
        if (r.detail !== undefined) rec.detail = r.detail;
        timeline.push(rec);
      } else timelineDropped++;
    }
  };

  /** May another request start now? Sets stopReason when the answer turns to no. */
  const mayStart = (): boolean => {
    if (stopReason !== null) return false;
    if (o.signal?.aborted) stopReason = 'signal';
    else if (started >= maxRequests) stopReason = 'requests';
    else if (performance.now() - t0 >= durationMs) stopReason = 'duration';
    return stopReason === null;
  };

  const launch = (): Promise<void> => {
    started++;
    inFlight++;
    return oneRequest(spec, live, () => hardStopped).then(record);
  };

  let progressTimer: NodeJS.Timeout | undefined;
  if (o.onProgress) {
    const cb = o.onProgress;
    progressTimer = setInterval(() => {
      cb({ elapsedMs: performance.now() - t0, requests: finished, ok: outcomes.ok, failed: finished - outcomes.ok, inFlight });
    }, o.progressIntervalMs ?? 1000);
    progressTimer.unref();
  }

  // Hard deadline: whatever is still open is destroyed and counted as aborted.
  let deadlineTimer: NodeJS.Timeout | undefined;
  const deadline = new Promise<void>((resolve) => {
    deadlineTimer = setTimeout(() => {
      hardStopped = true;
      if (stopReason === null) stopReason = 'deadline';
      // Count synchronously: the sockets' close events come later, after the
      // result has been returned.
      aborted = live.size;
      for (const s of live) s.destroy();
      resolve();
    }, deadlineMs);
  });

  let openStats: LoadResult['open'];
  let work: Promise<void>;
  if (mode === 'closed') {
    const worker = async (): Promise<void> => {
      while (!hardStopped && mayStart()) await launch();
    };
    work = Promise.all(Array.from({ length: concurrency }, worker)).then(() => undefined);
  } else {
    const rate = o.rate!;
    const maxInFlight = o.maxInFlight ?? 1000;
    const lateMs = o.lateThresholdMs ?? 10;
    const stats = { rate, scheduled: 0, started: 0, missed: 0, late: 0, maxStartLagMs: 0, maxInFlightSeen: 0 };
    openStats = stats;
    const intervalMs = 1000 / rate;
    const pending = new Set<Promise<void>>();
    work = new Promise<void>((resolveAll) => {
      // Start every request whose due time (t0 + k/rate) has passed, then sleep
      // until the next one is due. Timers fire at ~1 ms granularity, so at high
      // rates several start per tick; lag beyond lateThresholdMs is counted.
      let k = 0;
      const tick = (): void => {
        const now = performance.now();
        while (!hardStopped) {
          const due = t0 + k * intervalMs;
          if (due > now) break;
          if (due - t0 >= durationMs) {
            if (stopReason === null) stopReason = 'duration';
            break;
          }
          if (!mayStart()) break;
          k++;
          stats.scheduled++;
          if (inFlight >= maxInFlight) {
            // Not started at all (it would only have been late): counted, so the
            // offered rate the table reports is the one really offered.
            stats.missed++;
            started++; // counts against `requests`, like a started one
            continue;
          }
          const lag = now - due;
          if (lag > lateMs) stats.late++;
          if (lag > stats.maxStartLagMs) stats.maxStartLagMs = lag;
          stats.started++;
          const p = launch();
          pending.add(p);
          void p.then(() => pending.delete(p));
          if (inFlight > stats.maxInFlightSeen) stats.maxInFlightSeen = inFlight;
        }
        if (hardStopped || stopReason !== null) {
          void Promise.all([...pending]).then(() => resolveAll());
          return;
        }
        setTimeout(tick, Math.max(0, t0 + k * intervalMs - performance.now()));
      };
      tick();
    });
  }

  await Promise.race([work, deadline]);
  clearTimeout(deadlineTimer);
  if (progressTimer) clearInterval(progressTimer);
  const elapsedMs = performance.now() - t0;
  if (o.onProgress) {
    o.onProgress({ elapsedMs, requests: finished, ok: outcomes.ok, failed: finished - outcomes.ok, inFlight });
  }

  const result: LoadResult = {
    mode,
    target: { host, port: o.port, ...(o.localAddress ? { localAddress: o.localAddress } : {}) },
    startedAt,
    elapsedMs,
    stoppedBy: stopReason ?? 'requests',
    requests: finished,
    outcomes,
    failed: finished - outcomes.ok,
    details,
    aborted,
    latency,
    failedLatency,
    throughput: elapsedMs > 0 ? (finished * 1000) / elapsedMs : 0,
  };
  if (mode === 'closed') result.concurrency = concurrency;
  if (openStats) result.open = openStats;
  if (timelineLimit > 0) {
    result.timeline = timeline;
    result.timelineDropped = timelineDropped;
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
