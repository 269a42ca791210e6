/**
 * The Prometheus alerting rules (deploy/prometheus/): checked and unit-tested by
 * Prometheus's own promtool (Debian's, unpacked by install-deps.sh), every
 * metric they use is one the daemon serves, and mutated copies prove a wrong
 * metric name, a broken expression or an unknown field fail.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const DIR = join(root, 'deploy/prometheus');
const RULES = 'synhold-alerts.yml';
const TESTS = 'synhold-alerts.test.yml';

/** promtool check rules and test rules on a copy of the folder whose rules file is `rules`. */
function promtool(rules: string): { check: { status: number | null; out: string }; unit: { status: number | null; out: string } } {
  const dir = mkdtempSync(join(tmpdir(), 'synhold-rules-'));
  try {
    writeFileSync(join(dir, RULES), rules);
    copyFileSync(join(DIR, TESTS), join(dir, TESTS));
    const run = (args: string[]) => {
      const r = spawnSync('promtool', args, { cwd: dir, encoding: 'utf8' });
      return { status: r.status, out: `${r.stdout}${r.stderr}` };
    };
    return { check: run(['check', 'rules', RULES]), unit: run(['test', 'rules', TESTS]) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const rules = () => readFileSync(join(DIR, RULES), 'utf8');

test('promtool check rules and test rules: the shipped alerting rules are valid and fire exactly as their unit tests say', () => {
  const r = promtool(rules());
  assert.equal(r.check.status, 0, r.check.out);
  assert.match(r.check.out, /SUCCESS: 8 rules found/);
  assert.equal(r.unit.status, 0, r.unit.out);
  assert.match(r.unit.out, /SUCCESS/);
});

test('every synhold_* metric the rules use is one the daemon serves', () => {
  const served = new Set<string>();
  // The daemon's families (test/cli/metrics.test.ts holds the daemon to this capture).
  for (const m of readFileSync(join(root, 'test/fixtures/metrics/daemon-8677f57.prom'), 'utf8').matchAll(/^(synhold_\w+)[{ ]/gm)) served.add(m[1]!);
  const used = new Set([...rules().matchAll(/\b(synhold_\w+)/g)].map((m) => m[1]!));
  assert.ok(used.size >= 9, [...used].join(' '));
  assert.deepEqual(
    [...used].filter((u) => !served.has(u)),
    [],
  );
});

test('the rules check catches a wrong metric name, a broken expression, an unknown field', () => {
  const text = rules();
  const wrongName = promtool(text.replace('increase(synhold_watchdog_releases_total[15m])', 'increase(synhold_watchdog_release_total[15m])'));
  assert.equal(wrongName.check.status, 0, 'a wrong name is valid PromQL');
  assert.notEqual(wrongName.unit.status, 0, 'but the unit test sees the alert never fire');
  assert.match(wrongName.unit.out, /alertname: SynholdWatchdogRelease/);
  const broken = promtool(text.replace('synhold_holding == 1 and', 'synhold_holding == 1 and and'));
  assert.notEqual(broken.check.status, 0);
  assert.match(broken.check.out, /parse error/);
  const unknown = promtool(text.replace('        for: 1m\n', '        for: 1m\n        fore: 2m\n'));
  assert.notEqual(unknown.check.status, 0);
  assert.match(unknown.check.out, /field fore not found/);
});
