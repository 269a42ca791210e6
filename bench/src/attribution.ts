// Which reload a failed request belongs to. A reset during a reload loop is the
// old listener closing with that connection still in its queue, so a failure is
// charged to the reload whose window (its start to the next reload's start)
// the request started in. For the synhold strategies each reload also has the
// reason its hold ended (protect's summary line), so failures can be counted
// per release reason: "the holds released at `command exited` are the ones
// whose windows hold the resets" is the kind of answer this gives.

export interface ReloadWindow {
  /** epoch ms when the reload started */
  startedAt: number;
  /** why its hold ended (synhold strategies) */
  reason?: string;
}

export interface ReasonCount {
  holds: number;
  /** failed requests that started in the windows of these holds' reloads */
  failedRequests: number;
  /** how many of these reloads had at least one */
  reloadsWithFailures: number;
}

export interface Attribution {
  failedRequests: number;
  /** failed requests that started before the first reload */
  beforeFirstReload: number;
  reloadsWithFailures: number;
  /** the largest number of failed requests in one reload's window */
  maxPerReload: number;
  byReason?: Record<string, ReasonCount>;
}

/** `failures`: epoch ms at which each failed request started. */
export function attributeFailures(failures: number[], reloads: ReloadWindow[]): Attribution {
  const rs = [...reloads].sort((a, b) => a.startedAt - b.startedAt);
  const perReload = new Array<number>(rs.length).fill(0);
  let before = 0;
  for (const t of failures) {
    // last reload with startedAt <= t
    let lo = 0;
    let hi = rs.length - 1;
    let idx = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (rs[mid]!.startedAt <= t) {
        idx = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    if (idx < 0) before++;
    else perReload[idx]!++;
  }
  const out: Attribution = {
    failedRequests: failures.length,
    beforeFirstReload: before,
    reloadsWithFailures: perReload.filter((n) => n > 0).length,
    maxPerReload: Math.max(0, ...perReload),
  };
  if (rs.length > 0 && rs.every((r) => r.reason !== undefined)) {
    const by: Record<string, ReasonCount> = {};
    rs.forEach((r, i) => {
      const c = (by[r.reason!] ??= { holds: 0, failedRequests: 0, reloadsWithFailures: 0 });
      c.holds++;
      c.failedRequests += perReload[i]!;
      if (perReload[i]! > 0) c.reloadsWithFailures++;
    });
    out.byReason = by;
  }
  return out;
}

// Where the slow tail of the ok requests began. A request that took a SYN
// retransmit (1 s on Linux) or more began with a SYN that was lost: the phase of
// its reload it started in (before the hold, during it, after its release) says
// which part of the reload lost it. Hold windows come from protect's report
// (holdStartedAt and holdMs, on the wall clock, as the load's and the reloads'
// times are).

/** One hold's window on the wall clock, epoch ms. */
export interface HoldWindow {
  startedAt: number;
  endedAt: number;
}

export type SlowPhase = 'before the hold' | 'during the hold' | 'after the release' | 'no hold';

export interface SlowRequest {
  latencyMs: number;
  /** from its reload's start to its own, ms (absent: it started before the first reload) */
  sinceReloadMs?: number;
  /** with hold windows: where in its reload it started */
  phase?: SlowPhase;
  /** before: until the hold began; during: since it began; after: since the release */
  phaseMs?: number;
}

export interface SlowPlacement {
  /** ok requests that took at least this long are the slow ones */
  thresholdMs: number;
  requests: number;
  beforeFirstReload: number;
  reloadsWithSlow: number;
  /** with hold windows: how many started in each phase of their reload */
  byPhase?: Partial<Record<SlowPhase, number>>;
  /** the slowest ones (at most `keep`), slowest first */
  slowest: SlowRequest[];
}

/** Index of the last element with key(x) <= t in a list sorted by key, or -1. */
function lastAtOrBefore<T>(xs: readonly T[], t: number, key: (x: T) => number): number {
  let lo = 0;
  let hi = xs.length - 1;
  let idx = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (key(xs[mid]!) <= t) {
      idx = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return idx;
}

/**
 * `slow`: the slow ok requests (epoch ms start, latency); `holds`: the holds' windows, when the
 * strategy holds (undefined: no phases). Each request goes to the last reload that started at or
 * before it, as attributeFailures charges failures.
 */
export function placeSlow(
  slow: { startedAt: number; latencyMs: number }[],
  reloads: readonly { startedAt: number }[],
  holds: readonly HoldWindow[] | undefined,
  thresholdMs: number,
  keep = 10,
): SlowPlacement {
  const rs = reloads.map((r) => r.startedAt).sort((a, b) => a - b);
  const hs = holds ? [...holds].sort((a, b) => a.startedAt - b.startedAt) : undefined;
  const placed: SlowRequest[] = [];
  const reloadsHit = new Set<number>();
  const byPhase: Partial<Record<SlowPhase, number>> = {};
  let before = 0;
  for (const s of slow) {
    const t = s.startedAt;
    const i = lastAtOrBefore(rs, t, (x) => x);
    if (i < 0) {
      before++;
      placed.push({ latencyMs: s.latencyMs });
      continue;
    }
    reloadsHit.add(i);
    const p: SlowRequest = { latencyMs: s.latencyMs, sinceReloadMs: t - rs[i]! };
    if (hs) {
      const reloadEnd = rs[i + 1] ?? Infinity;
      const h = lastAtOrBefore(hs, t, (x) => x.startedAt);
      const next = hs[h + 1];
      if (h >= 0 && t < hs[h]!.endedAt) {
        p.phase = 'during the hold';
        p.phaseMs = t - hs[h]!.startedAt;
      } else if (h >= 0 && hs[h]!.startedAt >= rs[i]!) {
        p.phase = 'after the release';
        p.phaseMs = t - hs[h]!.endedAt;
      } else if (next && next.startedAt < reloadEnd) {
        p.phase = 'before the hold';
        p.phaseMs = next.startedAt - t;
      } else p.phase = 'no hold';
      byPhase[p.phase] = (byPhase[p.phase] ?? 0) + 1;
    }
    placed.push(p);
  }
  placed.sort((a, b) => b.latencyMs - a.latencyMs);
  return {
    thresholdMs,
    requests: slow.length,
    beforeFirstReload: before,
    reloadsWithSlow: reloadsHit.size,
    ...(hs ? { byPhase } : {}),
    slowest: placed.slice(0, keep),
  };
}
