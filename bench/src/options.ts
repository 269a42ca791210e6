// `synhold bench`'s command line, parsed and validated before anything runs,
// and the three presets:
//
//   --quick   6 s of load per strategy, and at least 3 reloads: the load runs on past 6 s until
//             the third reload, for up to QUICK_CAP_MS (a protected reload takes seconds in the
//             kernel lab: ~6-9 s on CI's 2-core EPYC, where the old 18 s cap reached only 2)
//   (none)    30 s per strategy
//   --full    the seed's run: 1,000,000 requests per strategy, and the load goes
//             on until at least 1,500 reloads were done (the seed: "over 1500 times")
//
// --requests N or --duration D replace the preset's bound. Every run is also
// bounded in time (capMs) whatever it asks for.

import { parseArgs } from 'node:util';
import { ConfigError, parseDuration } from '../../src/model/config.js';
import { STRATEGY_NAMES, type StrategyName } from './strategies/strategy.js';
import { isStrategyName, sortStrategies } from './strategies/index.js';

// The baseline is not asked for, the bench adds it per kernel. Variants that only measure one of
// synhold's options against its default (nfqueue-normal) run when named.
const ON_REQUEST: readonly StrategyName[] = ['nfqueue-normal', 'nfqueue-stop-old-unguarded'];
export const DEFAULT_STRATEGIES: readonly StrategyName[] = STRATEGY_NAMES.filter((s) => s !== 'baseline' && !ON_REQUEST.includes(s));

export interface BenchOptions {
  /** requested strategies (the baseline is added per kernel by the bench) */
  strategies: StrategyName[];
  preset: 'quick' | 'default' | 'full';
  /** reload interval given with --interval (undefined: 100 ms, or the strategy's own) */
  intervalMs?: number;
  concurrency: number;
  durationMs?: number;
  requests?: number;
  /**
   * --reference-requests: the request bound of the rows that only give the requested ones their
   * reference (the baseline, and `none` where the kernel lab adds it), in place of the bound above
   */
  referenceRequests?: number;
  minReloads?: number;
  /** hard bound on each strategy's load */
  capMs: number;
  requestTimeoutMs: number;
  warmupRequests: number;
  /** ab cross-check size (0: no cross-check) */
  abRequests: number;
  /** wrk's part of the cross-check, in seconds (it runs for a time, not a count) */
  wrkSeconds: number;
  out: string;
  json: boolean;
  /** the command line, for the report's "reproduce with" */
  argv: string[];
}

export const DEFAULT_INTERVAL_MS = 100;
export const QUICK_DURATION_MS = 6_000;
export const QUICK_MIN_RELOADS = 3;
/**
 * --quick's bound on each strategy's load while it waits for its QUICK_MIN_RELOADS: generous on
 * purpose (3 reloads at 20 s each), so a slow kernel lab still reaches the minimum; a fast one
 * stops at QUICK_DURATION_MS as before, since the load ends once both are reached.
 */
export const QUICK_CAP_MS = 60_000;
/** with --duration and a minimum of reloads, the load stops after this many durations at the latest */
export const DURATION_CAP_FACTOR = 3;
export const DEFAULT_DURATION_MS = 30_000;
export const FULL_REQUESTS = 1_000_000;
export const FULL_MIN_RELOADS = 1_500;
/** a strategy bounded by a request count still stops after this long */
export const REQUESTS_CAP_MS = 60 * 60_000;
/** --max-load-time's own bound: a seed-scale run in the kernel lab (1,500 protected reloads at ~4 s) needs about two hours */
export const MAX_LOAD_TIME_MS = 6 * 3_600_000;

export const BENCH_USAGE = `usage: synhold bench [--strategies LIST] [--quick | --full] [--requests N | --duration D]
                     [--min-reloads N] [--max-load-time D] [--interval D] [--concurrency C] [--out DIR] [--json]

The seed's experiment on this machine: nginx ("pong") behind HAProxy on port 16000, a new TCP
connection per request at concurrency C, HAProxy reloaded every --interval, once per strategy,
each strategy in a network namespace of its own (synhold-bench-*), plus a no-reload baseline.
Strategies that need sch_plug run in the kernel lab (User-Mode Linux) when this kernel lacks it,
together with a baseline and 'none' there: numbers compare within one kernel only.

  --strategies LIST  comma-separated, default all: ${DEFAULT_STRATEGIES.join(',')}
                     (baseline always runs; ${ON_REQUEST.join(', ')} only when named)
  --quick            ${QUICK_DURATION_MS / 1000} s of load per strategy and at least ${QUICK_MIN_RELOADS} reloads (the load runs on
                     for them, ${QUICK_CAP_MS / 1000} s at most: a protected reload takes seconds in the kernel lab)
  --full             the seed's run: ${FULL_REQUESTS.toLocaleString('en')} requests per strategy and at least ${FULL_MIN_RELOADS} reloads
  --requests N       stop each strategy's load after N requests (default: --duration ${DEFAULT_DURATION_MS / 1000}s)
  --duration D       ...or after D (30s, 2m)
  --reference-requests N
                     stop the reference rows (the baseline, and 'none' where the lab adds it
                     beside the strategies asked for) after N requests instead: a baseline's
                     percentiles need far fewer requests than the seed's scale, and the lab is slow
  --min-reloads N    keep the load going past its bound until N reloads were done too
                     (at most ${DURATION_CAP_FACTOR}x the --duration, or an hour with --requests;
                     --quick: ${QUICK_MIN_RELOADS}, for up to ${QUICK_CAP_MS / 1000} s)
  --max-load-time D  each strategy's load stops after D at the latest, instead of the bounds
                     above (up to ${MAX_LOAD_TIME_MS / 60_000}m: the seed's 1,500 reloads take about 2 hours in the kernel lab)
  --interval D       reload interval, start to start (default ${DEFAULT_INTERVAL_MS}ms; drop: 1s, the seed's)
  --concurrency C    simultaneous requests (default 50, the seed's ab -c)
  --out DIR          where table.txt, bench.json, latency.svg and latency.png go (default ./bench-out)
  --json             print the JSON document on stdout instead of the table

Needs root (network namespaces). Exit status: 0 every strategy ran or was skipped with a reason,
1 a strategy failed to run, 2 bad usage.`;

export class BenchUsageError extends ConfigError {}

function positiveInt(name: string, s: string, min = 1): number {
  if (!/^\d+$/.test(s.replace(/_/g, '')) || Number(s.replace(/_/g, '')) < min) throw new BenchUsageError(`${name} "${s}" is not an integer >= ${min}`);
  return Number(s.replace(/_/g, ''));
}

function duration(name: string, s: string): number {
  try {
    return parseDuration(s);
  } catch (e) {
    throw new BenchUsageError(`${name}: ${(e as Error).message}`);
  }
}

export function parseStrategies(list: string): StrategyName[] {
  const names = list
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (names.length === 0) throw new BenchUsageError('--strategies is empty');
  if (names.length === 1 && names[0] === 'all') return [...DEFAULT_STRATEGIES];
  const bad = names.filter((n) => !isStrategyName(n));
  if (bad.length > 0) throw new BenchUsageError(`unknown strategy ${bad.map((b) => JSON.stringify(b)).join(', ')} (have: ${STRATEGY_NAMES.join(', ')})`);
  return sortStrategies(names as StrategyName[]);
}

/** Parse `synhold bench` arguments (after the command name). Throws BenchUsageError. */
export function parseBenchArgs(args: string[], globals: { json?: boolean } = {}): BenchOptions | 'help' {
  let v;
  try {
    v = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        strategies: { type: 'string' },
        requests: { type: 'string' },
        duration: { type: 'string' },
        'min-reloads': { type: 'string' },
        'reference-requests': { type: 'string' },
        'max-load-time': { type: 'string' },
        interval: { type: 'string' },
        concurrency: { type: 'string' },
        out: { type: 'string' },
        json: { type: 'boolean' },
        quick: { type: 'boolean' },
        full: { type: 'boolean' },
        netns: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (e) {
    throw new BenchUsageError((e as Error).message.replace(/\. To specify a positional.*$/, ''));
  }
  if (v.help) return 'help';
  if (v.netns !== undefined) throw new BenchUsageError('bench creates its own network namespaces; --netns does not apply');
  if (v.quick && v.full) throw new BenchUsageError('--quick and --full exclude each other');
  if (v.requests !== undefined && v.duration !== undefined) throw new BenchUsageError('give --requests or --duration, not both');
  const preset = v.quick ? 'quick' : v.full ? 'full' : 'default';
  const o: BenchOptions = {
    strategies: parseStrategies(v.strategies ?? 'all'),
    preset,
    concurrency: v.concurrency !== undefined ? positiveInt('--concurrency', v.concurrency) : 50,
    capMs: REQUESTS_CAP_MS,
    requestTimeoutMs: 5000,
    warmupRequests: 200,
    abRequests: preset === 'quick' ? 10_000 : preset === 'full' ? 200_000 : 50_000,
    wrkSeconds: preset === 'quick' ? 3 : preset === 'full' ? 20 : 10,
    out: v.out ?? 'bench-out',
    json: Boolean(v.json || globals.json),
    argv: ['synhold', 'bench', ...args],
  };
  if (v.interval !== undefined) o.intervalMs = duration('--interval', v.interval);
  if (o.concurrency > 2000) throw new BenchUsageError(`--concurrency ${o.concurrency} is more than this bench's servers are set up for (2000)`);

  if (v.requests !== undefined) o.requests = positiveInt('--requests', v.requests);
  else if (v.duration !== undefined) o.durationMs = duration('--duration', v.duration);
  else if (preset === 'full') o.requests = FULL_REQUESTS;
  else o.durationMs = preset === 'quick' ? QUICK_DURATION_MS : DEFAULT_DURATION_MS;

  if (v['reference-requests'] !== undefined) o.referenceRequests = positiveInt('--reference-requests', v['reference-requests']);
  if (v['min-reloads'] !== undefined) o.minReloads = positiveInt('--min-reloads', v['min-reloads'], 0);
  else if (preset === 'full' && v.requests === undefined) o.minReloads = FULL_MIN_RELOADS;
  else if (preset === 'quick' && v.requests === undefined && v.duration === undefined) o.minReloads = QUICK_MIN_RELOADS;

  if (o.durationMs !== undefined) o.capMs = o.minReloads ? o.durationMs * DURATION_CAP_FACTOR : o.durationMs;
  // --quick's own bound (not an explicit --duration's): long enough for its minimum of reloads in a slow lab.
  if (preset === 'quick' && v.duration === undefined && v.requests === undefined && o.minReloads) o.capMs = Math.max(o.capMs, QUICK_CAP_MS);
  if (v['max-load-time'] !== undefined) {
    o.capMs = duration('--max-load-time', v['max-load-time']);
    if (o.capMs > MAX_LOAD_TIME_MS) throw new BenchUsageError(`--max-load-time ${v['max-load-time']} is over its maximum of ${MAX_LOAD_TIME_MS / 60_000}m`);
    if (o.durationMs !== undefined && o.capMs < o.durationMs) throw new BenchUsageError('--max-load-time is shorter than --duration');
  }
  if (o.requests !== undefined) o.abRequests = Math.min(o.abRequests, Math.max(1000, o.requests));
  return o;
}
