/**
 * The daemon's Prometheus metrics, through prom-client (the Node ecosystem's
 * client library): synhold's families, the library's default process and
 * event-loop metrics, and content negotiation between the Prometheus text
 * format and OpenMetrics.
 *
 * The synhold_* names, HELP texts, types and labels are those the daemon wrote by
 * hand before (test/cli/metrics.test.ts holds them to a capture): dashboards and
 * alert rules (deploy/prometheus/) use them.
 *
 * Loaded by the daemon only when --metrics is given (a dynamic import), so
 * `synhold protect`, which shares the bundle, never evaluates prom-client.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type RegistryContentType } from 'prom-client';

/** Hold durations in seconds: buckets for a histogram that spans a fast reload and a stuck one. */
const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** What the daemon knows at the moment of a scrape. */
export interface Snapshot {
  /** The backend setup chose, or undefined when not set up here. */
  backend: string | undefined;
  /** Epoch ms at which the current hold started, or undefined when not holding. */
  holdSince: number | undefined;
  /** Holds recorded here by any holder (StateStore.readStats: stats.json and the journal not yet folded in). */
  holdsTotal: number;
  /** The kernel's counters at the hold; undefined if they could not be read this time. */
  kernel: { heldPackets: number; drops: number } | undefined;
}

/** One registry's worth of synhold's families. */
class Families {
  readonly up: Gauge;
  readonly holding: Gauge;
  readonly holdAge: Gauge;
  readonly duration: Histogram;
  readonly released: Counter;
  readonly dropped: Counter;
  readonly watchdog: Counter;
  readonly errors: Counter;
  readonly holdsTotal: Counter;
  readonly kernelHeld: Gauge;
  readonly kernelDropped: Counter;

  constructor(registers: Registry<RegistryContentType>[]) {
    const r = { registers };
    this.up = new Gauge({ ...r, name: 'synhold_up', help: 'Whether synhold is set up here (1) or not (0).', labelNames: ['backend'] });
    this.holding = new Gauge({ ...r, name: 'synhold_holding', help: 'Whether new connections are being held right now.' });
    this.holdAge = new Gauge({ ...r, name: 'synhold_hold_age_seconds', help: 'How long the current hold has lasted (0 when not holding).' });
    this.duration = new Histogram({ ...r, name: 'synhold_hold_duration_seconds', help: 'Duration of holds this daemon owned.', buckets: BUCKETS });
    this.released = new Counter({ ...r, name: 'synhold_released_packets_total', help: 'Held packets let through at release (holds this daemon owned).' });
    this.dropped = new Counter({
      ...r,
      name: 'synhold_dropped_packets_total',
      help: 'Packets dropped during holds because the hold was full (holds this daemon owned).',
    });
    this.watchdog = new Counter({ ...r, name: 'synhold_watchdog_releases_total', help: 'Holds released because the owner died or max-hold was reached.' });
    this.errors = new Counter({ ...r, name: 'synhold_hold_errors_total', help: 'Hold requests that failed.' });
    this.holdsTotal = new Counter({ ...r, name: 'synhold_holds_total', help: 'Holds recorded here by any holder (daemon or forked), since setup.' });
    this.kernelHeld = new Gauge({ ...r, name: 'synhold_kernel_held_packets', help: 'Packets the kernel holds right now (plug qlen / queue_total).' });
    this.kernelDropped = new Counter({ ...r, name: 'synhold_kernel_dropped_packets', help: 'Drops the kernel counted at the hold since setup.' });
  }

  apply(s: Snapshot, now: number): void {
    this.up.reset();
    if (s.backend) this.up.set({ backend: s.backend }, 1);
    else this.up.set(0);
    this.holding.set(s.holdSince !== undefined ? 1 : 0);
    this.holdAge.set(s.holdSince !== undefined ? (now - s.holdSince) / 1000 : 0);
    setCounter(this.holdsTotal, s.holdsTotal);
    if (!s.backend) {
      this.kernelHeld.set(0);
      setCounter(this.kernelDropped, 0);
    } else if (s.kernel) {
      this.kernelHeld.set(s.kernel.heldPackets);
      setCounter(this.kernelDropped, s.kernel.drops);
    }
    // Counters unreadable this time (a qdisc being replaced) keep their last value:
    // a 0 would read as a counter reset, and a scrape must not fail for it.
  }
}

/** A counter whose total is kept elsewhere (a file, the kernel): prom-client counters only go up, so reset and add. */
function setCounter(c: Counter, total: number): void {
  c.reset();
  c.inc(total);
}

const OPENMETRICS = Registry.OPENMETRICS_CONTENT_TYPE;
const TEXT = Registry.PROMETHEUS_CONTENT_TYPE;

/**
 * The daemon's metrics. Two registries, one per format, each with its own metric
 * objects fed the same events: prom-client 15 renders OpenMetrics by renaming the
 * registry's counters in place (prometheus/client_js#829), so one registry that
 * had served OpenMetrics once would write the text format's counters without
 * their _total.
 */
export class DaemonMetrics {
  private readonly registries = new Map<RegistryContentType, Registry<RegistryContentType>>();
  private readonly sets: Families[] = [];

  constructor() {
    for (const type of [TEXT, OPENMETRICS] as const) {
      const reg = new Registry<RegistryContentType>();
      reg.setContentType(type);
      // The event-loop monitor samples every 100 ms, not prom-client's 10: at 10 ms, its two timers
      // (one per registry) more than doubled the idle daemon's CPU (scripts/metrics-cost.sh: 330 ms
      // in 30 s against 140 ms for the hand-written metrics; 120 ms at 100 ms).
      collectDefaultMetrics({ register: reg, eventLoopMonitoringPrecision: 100 });
      this.registries.set(type, reg);
      this.sets.push(new Families([reg]));
    }
  }

  observeHold(seconds: number, released: number, drops: number, safetyNet: boolean): void {
    for (const f of this.sets) {
      f.duration.observe(seconds);
      f.released.inc(released);
      f.dropped.inc(drops);
      if (safetyNet) f.watchdog.inc();
    }
  }

  holdError(): void {
    for (const f of this.sets) f.errors.inc();
  }

  /** The exposition for an Accept header, and its content type. */
  async render(accept: string | undefined, s: Snapshot): Promise<{ contentType: RegistryContentType; body: string }> {
    const now = Date.now();
    for (const f of this.sets) f.apply(s, now);
    const contentType = negotiate(accept);
    return { contentType, body: await this.registries.get(contentType)!.metrics() };
  }
}

/**
 * OpenMetrics if the Accept header prefers it to the text format (Prometheus
 * sends `application/openmetrics-text;version=1.0.0,...,text/plain;version=0.0.4;q=0.5,*\/*;q=0.1`),
 * else the text format, which every scraper reads.
 */
export function negotiate(accept: string | undefined): RegistryContentType {
  let om = 0;
  let text = 0;
  for (const range of (accept ?? '').split(',')) {
    const [type = '', ...params] = range.split(';').map((p) => p.trim().toLowerCase());
    const q = Number(params.find((p) => p.startsWith('q='))?.slice(2) ?? 1);
    if (Number.isNaN(q)) continue;
    if (type === 'application/openmetrics-text') om = Math.max(om, q);
    else if (type === 'text/plain' || type === 'text/*' || type === '*/*') text = Math.max(text, q);
  }
  return om > 0 && om > text ? OPENMETRICS : TEXT;
}
