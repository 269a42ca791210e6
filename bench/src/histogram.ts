// Latency histograms for the bench, on top of hdr-histogram-js (the HdrHistogram
// project's own TypeScript port: maintained, no native code, runs on Node 20).
//
// Why HDR and not an array of samples: the seed's full run is 1,000,000 requests;
// an HDR histogram keeps every one of them at 3 significant digits in a few tens
// of KiB, and its percentiles are exact to that precision, which a sampled
// reservoir's p99.9 would not be.
//
// Unit: values are recorded in MICROSECONDS (integers), so a 0.1 ms loopback
// request keeps 3 significant digits, while a 5 s timeout still fits. Everything
// this module returns to callers is in MILLISECONDS, the unit of every table and
// plot, so nobody has to remember the scale.

import * as hdr from 'hdr-histogram-js';

export type Histogram = hdr.Histogram;

/** Highest latency the histograms track: 1 hour in µs. The load generator's hard
 * deadline is far below it; autoResize would grow it anyway. */
const HIGHEST_US = 3_600_000_000;

/** A new, empty latency histogram (µs, 3 significant digits, plain JS — no WASM,
 * so nothing has to be initialised asynchronously and it can be encoded). */
export function newLatencyHistogram(): Histogram {
  return hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: HIGHEST_US,
    numberOfSignificantValueDigits: 3,
    bitBucketSize: 32,
    autoResize: true,
    useWebAssembly: false,
  });
}

/** Record one latency given in milliseconds (float). Sub-µs values round to 1 µs:
 * a zero would be invisible to HDR's minNonZeroValue and to log-scale plots. */
export function recordMs(h: Histogram, ms: number): void {
  const us = Math.max(1, Math.round(ms * 1000));
  h.recordValue(us);
}

export interface LatencySummaryMs {
  count: number;
  min: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
}

const round3 = (x: number): number => Math.round(x * 1000) / 1000;

/** Percentiles in ms. An empty histogram gives zeros with count 0 (callers must
 * look at count before reading anything into the numbers). */
export function summarizeMs(h: Histogram): LatencySummaryMs {
  if (h.totalCount === 0) {
    return { count: 0, min: 0, mean: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0 };
  }
  const ms = (us: number): number => round3(us / 1000);
  // HDR answers a percentile with the highest value equivalent to its bucket,
  // which can lie a few µs above the largest value recorded: clamp, so that
  // p99.9 <= max always holds.
  const pct = (p: number): number => ms(Math.min(h.getValueAtPercentile(p), h.maxValue));
  return {
    count: h.totalCount,
    min: ms(h.minNonZeroValue),
    mean: ms(h.mean),
    p50: pct(50),
    p90: pct(90),
    p99: pct(99),
    p999: pct(99.9),
    max: ms(h.maxValue),
  };
}

/** Compact, lossless form for the bench's raw JSON (HdrHistogram's standard
 * compressed base64, readable by the Java/Go/Rust ports too). */
export function encodeHistogram(h: Histogram): string {
  return hdr.encodeIntoCompressedBase64(h);
}

export function decodeHistogram(b64: string): Histogram {
  return hdr.decodeFromCompressedBase64(b64, 32, false);
}

/** One non-empty HDR bucket: a latency (ms) and how many requests had it. */
export interface HistogramPoint {
  ms: number;
  count: number;
}

/**
 * Every non-empty bucket of the histogram, in ascending latency. Reads the
 * counts array through JsHistogram's public accessors (the histograms built
 * here are always JsHistogram: useWebAssembly is false and decode is asked
 * for a JS one). The report re-bins these points on a log axis.
 */
export function histogramPoints(h: Histogram): HistogramPoint[] {
  if (!(h instanceof hdr.JsHistogram)) {
    throw new Error('histogramPoints: expected a JS (not WASM) HDR histogram');
  }
  const out: HistogramPoint[] = [];
  for (let i = 0; i < h.countsArrayLength; i++) {
    const c = h.getCountAtIndex(i);
    if (c > 0) {
      out.push({ ms: h.medianEquivalentValue(h.valueFromIndex(i)) / 1000, count: c });
    }
  }
  return out;
}
