/** Human renderings of the data objects the CLI also prints as JSON. */
import type { StatusReport } from '../protect/setup.js';

function prefixes(ps: { address: string; prefixLength: number }[]): string {
  return ps.map((p) => `${p.address}/${p.prefixLength}`).join(', ');
}

/** The plug's egress topology and the steering as built (--egress-topology and --steering auto resolved). */
function topology(s: StatusReport): string {
  // auto's reason is news only when it fell back to the seed's prio root (it says why).
  const t = s.topology;
  const redirect = !t ? '' : t.installed === 'clsact' ? ', clsact -> IFB' : `, prio root${t.reason ? ` (${t.reason})` : ''}`;
  if (!s.steering) return redirect;
  const holding = s.steering.installed === 'while-holding';
  if (s.backend === 'plug') return `${redirect}${holding ? ', its filters only while holding' : ', its filters always'}`;
  return holding ? ', steered only while holding' : ', steered always (iptables rule)';
}

export function formatStatus(s: StatusReport): string {
  if (!s.setUp) return `synhold: not set up${s.netns ? ` in netns ${s.netns}` : ''}`;
  const c = s.config!;
  const lines = [`synhold: set up${s.netns ? ` in netns ${s.netns}` : ''}, backend ${s.backend} (${s.backendReason})`];
  lines.push(
    `  protecting: new tcp connections to port ${c.ports.join(', ')} on dev ${c.dev} (${c.direction}${topology(s)})` +
      `${c.addresses.length ? `, to ${prefixes(c.addresses)}` : ', any local address'}` +
      `${c.sources.length ? `, from ${prefixes(c.sources)} only` : ''}`,
  );
  if (s.migrateReq !== undefined) lines.push(`  net.ipv4.tcp_migrate_req: ${s.migrateReq}${c.migrateReq ? ' (set by setup, restored by teardown)' : ''}`);
  if (s.held && !s.hold) {
    lines.push('  state: HOLDING (a hold is starting or ending)');
  } else if (s.held && s.hold) {
    lines.push(
      `  state: HOLDING for ${s.hold.heldForMs} ms (${s.hold.via} pid ${s.hold.owner.pid}${s.hold.ownerAlive ? '' : ', gone'}; ` +
        `watchdog pid ${s.hold.watchdog.pid}${s.hold.watchdogStopped ? ', STOPPED' : s.hold.watchdogAlive ? '' : ', gone'}; ` +
        `released at the latest in ${Math.max(0, s.hold.deadline - Date.now())} ms)`,
    );
  } else {
    lines.push('  state: not holding');
  }
  if (s.counters) {
    lines.push(
      `  kernel: ${s.counters.heldPackets} packets held now${s.counters.heldBytes !== undefined ? ` (${s.counters.heldBytes} bytes)` : ''}, ` +
        `${s.counters.drops} dropped since setup${s.counters.packets !== undefined ? `, ${s.counters.packets} passed through the hold path` : ''}`,
    );
  }
  const st = s.stats;
  if (st.lastHold) {
    const h = st.lastHold;
    lines.push(`  last hold: ${h.durationMs.toFixed(1)} ms at ${h.startedAt}, ${h.released} released, ${h.drops} dropped (${h.reason})`);
  }
  lines.push(`  totals: ${st.holds} holds, ${st.releasedTotal} released, ${st.dropsTotal} dropped, ${st.watchdogReleases} released by a watchdog`);
  if (s.cost) lines.push(`  cost of a hold: ${s.cost}`);
  if (s.problem) lines.push(`  PROBLEM: ${s.problem}`);
  return lines.join('\n');
}
