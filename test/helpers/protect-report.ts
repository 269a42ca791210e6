/**
 * Writes docs/PROTECT.md from measure-protect.ts's JSON documents (one per
 * kernel/backend), so every number there comes from a run, never from a hand.
 *   node protect-report.js OUT.md A.json [B.json ...]
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import type { Measurement } from './measure-protect.js';

const pct = (v: number[], p: number) => {
  if (!v.length) return NaN;
  const s = [...v].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
};
const f = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '-');

function section(m: Measurement, command: string): string {
  const base = m.variants[0]!.result.latencyMs;
  const rows = m.variants.map(({ name, result: r }) => {
    const holds = r.holds.map((h) => h.ms);
    const bySockets = r.holds.filter((h) => h.reason.startsWith('port ')).length;
    const fail = r.requests ? (100 * r.failed) / r.requests : 0;
    return (
      `| ${name} | ${r.requests} | ${r.failed} (${f(fail, 3)}%) | ${r.reloads}${r.reloads ? ` (${f(r.reloadRatePerSec, 2)}/s)` : ''} | ${r.reloads ? f(pct(r.reloadDurationsMs, 0.5)) : '-'} | ` +
      `${holds.length ? `${f(pct(holds, 0.5))} / ${f(pct(holds, 0.99))} / ${f(Math.max(...holds))}` : '-'} | ${holds.length ? `${bySockets}/${holds.length}` : '-'} | ` +
      `${f(r.latencyMs.p50, 2)} / ${f(r.latencyMs.p99, 2)} / ${f(r.latencyMs.p999, 2)} / ${f(r.latencyMs.max, 2)} | +${f(r.latencyMs.p99 - base.p99, 2)} |`
    );
  });
  return `## ${m.backend} backend, kernel ${m.kernel}

Concurrency ${m.concurrency} (closed loop, a new TCP connection per request), a reload due every ${m.intervalMs} ms
(start to start; a reload that overruns is followed at once), ${m.date}.
Command: \`${command}\`

| variant | requests | failed | reloads | reload command ms (p50) | hold ms p50 / p99 / max | released by socket rule | latency ms p50 / p99 / p99.9 / max | p99 added vs baseline |
|---|---|---|---|---|---|---|---|---|
${rows.join('\n')}
`;
}

const [out, ...inputs] = process.argv.slice(2);
if (!out || inputs.length === 0) {
  process.stderr.write('usage: protect-report OUT.md MEASUREMENT.json[=COMMAND] ...\n');
  process.exit(2);
}
const sections = inputs.map((arg) => {
  const [file, command = 'scripts/measure-protect.sh'] = arg.split('=');
  return section(JSON.parse(readFileSync(file!, 'utf8')) as Measurement, command);
});
// The study kept below the generated tables (written from hold-timing-study's runs: hold-timing-report.ts) stays.
const STUDY = '\n## How short can a hold be';
const kept = existsSync(out) ? readFileSync(out, 'utf8') : '';
const study = kept.includes(STUDY) ? kept.slice(kept.indexOf(STUDY)) : '';
writeFileSync(
  out,
  `# What protect costs and buys

HAProxy 2.6 in front of nginx-light ("pong"), reloaded with \`haproxy -f CFG -p PIDFILE -D -sf $(cat PIDFILE)\`,
unprotected and wrapped in \`synhold protect\`, with the same load; failures are counted by the client
(test/helpers/reload-experiment.ts). "release on sockets" is protect's default: release as soon as the
new listener is up and the old one gone (sock_diag), or at the command's exit by the README's rules;
"release at exit" is \`--release-on exit\`; "via synhold daemon" is the default with \`synhold daemon\` running,
so no holder process is forked per reload. The hold is what a new connection made during a reload waits
at most; "reload command ms" is the wall time of the whole reload command as run (for protect: starting
synhold, forking the holder, holding, HAProxy's reload, releasing), which bounds the reload rate, not any
client's latency.

Regenerate: \`scripts/measure-protect.sh\` (host kernel, nfqueue, and the kernel lab, plug).

How to read it:
- Every protected variant should show 0 failed; the unprotected row shows what the race costs.
- The hold is roughly HAProxy's own reload time: with \`-D\`, the old listener closes just before the
  command exits, so releasing on the socket rule and at exit come out close. The socket rule earns its
  keep with commands that go on after the switch (a foreground server start, a script that reloads and
  then does more work) and with full restarts, where it waits for the new listener instead.
- "reload command ms" is much larger than the hold: it includes starting synhold itself (and, without the
  daemon, a holder process). That limits how often one can reload, not how long a client waits.
- The kernel lab has one slow CPU shared by everything, so its absolute numbers are far above the host's;
  compare rows within one table only.
- setup also turns on \`net.ipv4.tcp_migrate_req\` (default): without it, on a machine starved for CPU,
  connections that were already queued on the old listener when the hold began (the old process never
  accepted them) were reset when it closed; the plug only holds SYNs that arrive during the hold.

${sections.join('\n')}${study}`,
);
