/**
 * The Grafana dashboard (deploy/grafana/): every panel's query is PromQL that
 * Prometheus's own parser accepts (promtool check rules, the queries written as
 * recording rules), and names only metrics the daemon serves: synhold's families
 * (the capture test/cli/metrics.test.ts holds the daemon to) and prom-client's
 * default metrics as the library itself writes them. Mutated copies fail.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { collectDefaultMetrics, Registry } from 'prom-client';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const DASHBOARD = join(root, 'deploy/grafana/synhold-dashboard.json');

interface Dashboard {
  uid: string;
  panels: { id: number; title: string; targets: { expr: string }[] }[];
  templating: { list: { name: string }[] };
}

/** The queries with the dashboard's variables as Grafana fills them with one job and all instances. */
function queries(d: Dashboard): string[] {
  return d.panels.flatMap((p) => p.targets.map((t) => t.expr.replaceAll('$job', 'synhold').replaceAll('$instance', '.*')));
}

/** promtool's verdict on the queries, each written as a recording rule. */
function parseErrors(exprs: string[]): string {
  const dir = mkdtempSync(join(tmpdir(), 'synhold-dash-'));
  try {
    const rules = { groups: [{ name: 'dashboard', rules: exprs.map((expr, i) => ({ record: `dashboard:query${i}`, expr })) }] };
    writeFileSync(join(dir, 'rules.yml'), JSON.stringify(rules)); // JSON is YAML
    const r = spawnSync('promtool', ['check', 'rules', 'rules.yml'], { cwd: dir, encoding: 'utf8' });
    return r.status === 0 ? '' : `${r.stdout}${r.stderr}`;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The metric families the daemon serves. */
async function served(): Promise<Set<string>> {
  const out = new Set<string>();
  const fixture = readFileSync(join(root, 'test/fixtures/metrics/daemon-8677f57.prom'), 'utf8');
  const reg = new Registry();
  collectDefaultMetrics({ register: reg });
  for (const m of `${fixture}\n${await reg.metrics()}`.matchAll(/^([a-z_:][\w:]*)[{ ]/gm)) out.add(m[1]!);
  return out;
}

const unknownMetrics = (exprs: string[], known: Set<string>) =>
  [...new Set(exprs.flatMap((e) => [...e.matchAll(/\b((?:synhold|process|nodejs)_\w+)/g)].map((m) => m[1]!)))].filter((n) => !known.has(n));

const load = () => JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Dashboard;

test('deploy/grafana: the dashboard parses, its panels have unique ids, its queries are valid PromQL on metrics the daemon serves', async () => {
  const d = load();
  assert.equal(d.uid, 'synhold');
  assert.deepEqual(
    d.templating.list.map((v) => v.name),
    ['datasource', 'job', 'instance'],
  );
  assert.equal(new Set(d.panels.map((p) => p.id)).size, d.panels.length);
  const exprs = queries(d);
  assert.ok(exprs.length >= 9);
  assert.equal(parseErrors(exprs), '');
  const known = await served();
  assert.ok(known.has('synhold_hold_duration_seconds_bucket') && known.has('process_resident_memory_bytes'));
  assert.deepEqual(unknownMetrics(exprs, known), []);
});

test('the dashboard check catches a broken query and a metric the daemon does not serve', async () => {
  const exprs = queries(load());
  assert.match(parseErrors([...exprs, 'sum by (instance (rate(synhold_holding[5m]))']), /parse error|unclosed/);
  assert.deepEqual(unknownMetrics([...exprs, 'synhold_hold_seconds_total'], await served()), ['synhold_hold_seconds_total']);
});
