// wrk (Debian package wrk), a second C client to hold the load generator
// against: an epoll event loop per thread, like the generator's engines. With
// `Connection: close` it opens a new connection for every request (it
// reconnects whenever a response says the connection will not be kept), the
// seed's workload. Its latency starts when the request is written, after the
// connect, so only its rate compares with ab's and the generator's.

import { exec } from '../exec.js';

export const WRK_BIN = 'wrk';

export interface WrkOptions {
  threads: number;
  connections: number;
  durationS: number;
  /** Keep connections open (wrk's default); otherwise `Connection: close`, a new connection per request. */
  keepAlive?: boolean;
}

export interface WrkResult extends WrkOptions {
  /** responses wrk counted */
  requests: number;
  rps: number;
  /** connect + read + write + timeout socket errors */
  socketErrors: number;
  non2xx: number;
  /** ms; NaN when wrk did not print them */
  p50: number;
  p90: number;
  p99: number;
  error?: string;
}

function toMs(value: string, unit: string): number {
  const v = Number(value);
  switch (unit) {
    case 'us':
      return v / 1000;
    case 'ms':
      return v;
    case 's':
      return v * 1000;
    case 'm':
      return v * 60_000;
    default:
      return NaN;
  }
}

/** Parse wrk's report (`--latency` adds the percentile lines). */
export function parseWrkOutput(out: string): Pick<WrkResult, 'requests' | 'rps' | 'socketErrors' | 'non2xx' | 'p50' | 'p90' | 'p99'> {
  const num = (re: RegExp): number => {
    const m = re.exec(out);
    return m ? Number(m[1]) : NaN;
  };
  const pct = new Map([...out.matchAll(/^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$/gm)].map((m) => [m[1]!, toMs(m[2]!, m[3]!)]));
  const se = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  return {
    requests: num(/^\s*(\d+) requests in /m),
    rps: num(/^Requests\/sec:\s+([\d.]+)/m),
    socketErrors: se ? se.slice(1, 5).reduce((a, b) => a + Number(b), 0) : 0,
    non2xx: /Non-2xx or 3xx responses: (\d+)/.test(out) ? num(/Non-2xx or 3xx responses: (\d+)/) : 0,
    p50: pct.get('50') ?? NaN,
    p90: pct.get('90') ?? NaN,
    p99: pct.get('99') ?? NaN,
  };
}

/** wrk's command line: `wrk -t T -c C -d Ds --timeout 5s --latency [-H 'Connection: close'] http://HOST:PORT/`. */
export function wrkArgv(host: string, port: number, o: WrkOptions): string[] {
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}/`;
  return [
    WRK_BIN,
    '-t',
    String(o.threads),
    '-c',
    String(o.connections),
    '-d',
    `${o.durationS}s`,
    '--timeout',
    '5s',
    '--latency',
    ...(o.keepAlive ? [] : ['-H', 'Connection: close']),
    url,
  ];
}

/** The result of a finished wrk command (its stdout parsed; `error` when it did not run through). */
export function wrkResult(r: { code: number | null; error?: string; timedOut: boolean; stdout: string; stderr: string }, o: WrkOptions): WrkResult {
  const parsed = parseWrkOutput(r.stdout);
  const out: WrkResult = { ...o, ...parsed };
  if (r.code !== 0 || !Number.isFinite(parsed.rps)) {
    out.error = r.error
      ? `wrk could not run (${r.error}): install the Debian package wrk`
      : r.timedOut
        ? 'wrk timed out'
        : `wrk exited ${r.code}: ${r.stderr.trim().split('\n').slice(-2).join(' | ')}`;
  }
  return out;
}

/** Run wrk, bounded (its duration + 30 s). Never rejects. */
export async function runWrk(host: string, port: number, o: WrkOptions): Promise<WrkResult> {
  return wrkResult(await exec(wrkArgv(host, port, o), { timeoutMs: (o.durationS + 30) * 1000 }), o);
}
