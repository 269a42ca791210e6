/**
 * Runs the tests that need a kernel with sch_plug (test/lab-guest/) inside the
 * kernel lab, once, and reports each guest test here as a test of its own, with
 * the guest's verdict. If the lab cannot run, this FAILS: a plug test never
 * passes by being skipped.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { labAvailable, runInLab } from '../../bench/src/lab/uml.js';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..', '..');
const guestDir = join(here, '..', 'lab-guest');

interface GuestResult {
  name: string;
  ok: boolean;
  skipped: boolean;
  detail: string;
}

/** Reads node's TAP output: top-level `ok N - name` / `not ok N - name` lines and their YAML blocks. */
export function parseTap(tap: string): GuestResult[] {
  const out: GuestResult[] = [];
  const lines = tap.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /^(not )?ok \d+ - (.*?)(?: # (SKIP|TODO).*)?$/.exec(lines[i]!);
    if (!m) continue;
    const detail: string[] = [];
    for (let j = i + 1; j < lines.length && /^ {2}/.test(lines[j]!); j++) detail.push(lines[j]!);
    out.push({ name: m[2]!, ok: !m[1], skipped: m[3] === 'SKIP', detail: detail.join('\n') });
  }
  return out;
}

const files = readdirSync(guestDir)
  .filter((f) => f.endsWith('.test.js'))
  .sort();

for (const file of files) {
  test(`kernel lab: ${file}`, { timeout: 30 * 60_000 }, async (t) => {
    const avail = labAvailable();
    assert.ok(avail.ok, `THE KERNEL LAB IS UNAVAILABLE (${avail.reason}); tests that need sch_plug cannot run. Run scripts/install-deps.sh.`);
    const r = await runInLab({
      command: [process.execPath, '--test', '--test-reporter=tap', '--test-concurrency=1', join(guestDir, file)],
      cwd: repo,
      timeoutMs: 25 * 60_000,
    });
    assert.equal(r.timedOut, false, `the lab run timed out after ${r.durationMs} ms\n${r.stderr.slice(-2000)}`);
    const results = parseTap(r.stdout);
    assert.ok(results.length > 0, `the guest ran no test (exit ${r.exitCode})\nstdout:\n${r.stdout.slice(-2000)}\nstderr:\n${r.stderr.slice(-2000)}`);
    t.diagnostic(`lab: boot ${r.bootMs} ms, run ${r.durationMs} ms, ${results.length} guest tests`);
    for (const g of results) {
      await t.test(g.name, () => {
        assert.ok(!g.skipped, `guest test skipped itself: ${g.detail}`);
        assert.ok(g.ok, `failed in the kernel lab:\n${g.detail}`);
      });
    }
    assert.equal(r.exitCode, 0, `guest node --test exited ${r.exitCode}\n${r.stderr.slice(-2000)}`);
  });
}
