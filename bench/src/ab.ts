// Apache Bench, the seed's client, as a cross-check of the bench's own load
// generator: the same HAProxy -> nginx pair, the same concurrency, a new
// connection per request (ab's default: no -k). If the two disagree wildly on
// latency or throughput, one of them is measuring itself rather than the
// server.
//
// ab is only used on a run without reloads: it aborts after ~10 connect errors
// even with -r (issue 5), so it cannot measure an unprotected reload loop.

import { exec } from './exec.js';

export const AB_BIN = 'ab';

export interface AbResult {
  requests: number;
  concurrency: number;
  complete: number;
  failed: number;
  rps: number;
  meanMs: number;
  /** ab's percentiles are whole milliseconds */
  p50: number;
  p90: number;
  p99: number;
  max: number;
  /** set when ab did not finish normally */
  error?: string;
}

/** Parse ab's summary (the "Complete requests", "Requests per second" and percentile lines). */
export function parseAbOutput(out: string): Omit<AbResult, 'requests' | 'concurrency'> {
  const num = (re: RegExp): number => {
    const m = re.exec(out);
    return m ? Number(m[1]) : NaN;
  };
  const pct = new Map([...out.matchAll(/^\s+(\d+)%\s+(\d+)/gm)].map((m) => [m[1]!, Number(m[2])]));
  return {
    complete: num(/Complete requests:\s+(\d+)/),
    failed: num(/Failed requests:\s+(\d+)/),
    rps: num(/Requests per second:\s+([\d.]+)/),
    meanMs: num(/Time per request:\s+([\d.]+) \[ms\] \(mean\)/),
    p50: pct.get('50') ?? NaN,
    p90: pct.get('90') ?? NaN,
    p99: pct.get('99') ?? NaN,
    max: pct.get('100') ?? NaN,
  };
}

/** ab's command line: `ab -q [-t S] -n N -c C -r -s 5 http://HOST:PORT/` (-n after -t: -t alone caps -n at 50,000). */
export function abArgv(host: string, port: number, requests: number, concurrency: number, o: { timeLimitS?: number } = {}): string[] {
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}/`;
  const limit = o.timeLimitS !== undefined ? ['-t', String(o.timeLimitS)] : [];
  return [AB_BIN, '-q', ...limit, '-n', String(requests), '-c', String(concurrency), '-r', '-s', '5', url];
}

/** Why an ab run gave no result, or undefined when it did. */
export function abError(
  r: { code: number | null; error?: string; timedOut: boolean; stderr: string },
  parsed: { complete: number },
  timeoutMs: number,
): string | undefined {
  if (r.code === 0 && Number.isFinite(parsed.complete)) return undefined;
  return r.error
    ? `ab could not run (${r.error}): install apache2-utils`
    : r.timedOut
      ? `ab timed out after ${timeoutMs} ms`
      : `ab exited ${r.code}: ${r.stderr.trim().split('\n').slice(-2).join(' | ')}`;
}

/** `ab -q -n N -c C -r -s 5 http://HOST:PORT/`, bounded by timeoutMs. Never rejects. */
export async function runAb(host: string, port: number, requests: number, concurrency: number, timeoutMs: number): Promise<AbResult> {
  const r = await exec(abArgv(host, port, requests, concurrency), { timeoutMs });
  const parsed = parseAbOutput(r.stdout);
  const out: AbResult = { requests, concurrency, ...parsed };
  const error = abError(r, parsed, timeoutMs);
  if (error !== undefined) out.error = error;
  return out;
}
