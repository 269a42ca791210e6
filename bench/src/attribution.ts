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
