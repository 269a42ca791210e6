/**
 * Tables for docs/PROTECT.md's "How short can a hold be" from hold-timing-study's JSON lines:
 *   node hold-timing-report.js FILE.jsonl[.gz] [FILE2.jsonl[.gz] ...]
 * One row per run (hold variant x tcp_migrate_req), then the failed requests placed on their
 * reload's timeline. Times in ms from CMD's start; p50 / p90 / p99 / max.
 */
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import type { ReloadTimeline } from './hold-timing-study.js';

interface Run {
  options: { hold: string; reloads: number; concurrency: number; pollMs?: number };
  migrateReq: string;
  requests: number;
  failed: number;
  kernel: Record<string, number>;
  reloads: ReloadTimeline[];
  failures: { detail: string; reload: number | null; startMs?: number; endMs?: number }[];
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))];
};
const dist = (xs: number[]) => (xs.length ? [0.5, 0.9, 0.99, 1].map((p) => (p === 1 ? Math.max(...xs) : pct(xs, p)!).toFixed(2)).join(' / ') : '-');
const has =
  <K extends keyof ReloadTimeline>(k: K) =>
  (r: ReloadTimeline) =>
    r[k] !== undefined;

function row(d: Run): string {
  const R = d.reloads;
  const both = R.filter((r) => r.newSeenMs !== undefined && r.oldFreedMs !== undefined);
  const held = R.filter((r) => r.holdBeganMs !== undefined && r.releasedMs !== undefined);
  const k = d.kernel;
  return (
    `| ${d.options.hold} | ${d.migrateReq} | ${R.length} | ${d.requests} | **${d.failed}** | ` +
    `${dist(R.filter(has('newSeenMs')).map((r) => r.newSeenMs!))} | ${dist(both.map((r) => r.oldFreedMs! - r.newSeenMs!))} | ${dist(R.map((r) => r.exitMs))} | ` +
    `${held.length ? dist(held.map((r) => r.holdBeganMs!)) : '-'} | ${held.length ? dist(held.map((r) => r.releasedMs! - r.holdBeganMs!)) : '-'} | ` +
    `${held.length ? Math.max(...held.map((r) => r.oldQueuedAtHold ?? 0)) : '-'} | ${k['TcpExt.TCPMigrateReqSuccess'] ?? 0} / ${k['TcpExt.TCPMigrateReqFailure'] ?? 0} |`
  );
}

function failures(d: Run): string[] {
  return d.failures.map((f) => {
    const r = f.reload !== null ? d.reloads[f.reload] : undefined;
    const at = (x?: number) => (x === undefined ? '-' : x.toFixed(2));
    return `- ${d.options.hold}, migrate ${d.migrateReq}: ${f.detail}, reload #${f.reload}: request ${at(f.startMs)} -> ${at(f.endMs)}; new listener seen ${at(r?.newSeenMs)}, old freed ${at(r?.oldFreedMs)}, hold ${at(r?.holdBeganMs)} -> ${at(r?.releasedMs)}`;
  });
}

const read = (f: string) => (f.endsWith('.gz') ? gunzipSync(readFileSync(f)).toString('utf8') : readFileSync(f, 'utf8'));
const runs = process.argv.slice(2).flatMap((f) =>
  read(f)
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Run),
);
const lines = [
  '| hold | migrate_req | reloads | requests | failed | new listener seen | old freed - new seen | CMD exit | hold began | hold ms | old queue at hold (max) | migrated ok / failed |',
  '|---|---|---:|---:|---:|---|---|---|---|---|---:|---|',
  ...runs.map(row),
  '',
  ...runs.flatMap((d) =>
    d.failures.length <= 12 ? failures(d) : [`- ${d.options.hold}, migrate ${d.migrateReq}: ${d.failures.length} failures (not listed)`],
  ),
];
process.stdout.write(`${lines.join('\n')}\n`);
