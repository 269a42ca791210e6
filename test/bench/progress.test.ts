// The progress display: a bar redrawn in place on a terminal, throttled plain
// lines otherwise, fed by progress files that grow while they are read.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileTail, ProgressView, bar, fractionDone } from '../../bench/src/progress.js';
import type { LoadPlan, ProgressEvent } from '../../bench/src/protocol.js';

const plan: LoadPlan = { concurrency: 50, durationMs: 10_000, capMs: 10_000, requestTimeoutMs: 5000, warmupRequests: 200 };

function sink(): { text: () => string; write: (s: string) => void } {
  let t = '';
  return { text: () => t, write: (s: string) => void (t += s) };
}

test('FileTail: only complete new lines, across partial writes; a missing file is no lines', () => {
  const dir = mkdtempSync(join(tmpdir(), 'synhold-progress-test-'));
  try {
    const f = join(dir, 'p.jsonl');
    const t = new FileTail(f);
    assert.deepEqual(t.lines(), []);
    writeFileSync(f, '{"a":1}\n{"b"');
    assert.deepEqual(t.lines(), ['{"a":1}']);
    assert.deepEqual(t.lines(), []);
    appendFileSync(f, ':2}\n{"c":3}\n');
    assert.deepEqual(t.lines(), ['{"b":2}', '{"c":3}']);
    appendFileSync(f, 'not json\n');
    assert.deepEqual(t.events(), [], 'a torn or foreign line is ignored');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('fractionDone: by time, by requests, and requests AND reloads for --full', () => {
  assert.equal(fractionDone({ plan, elapsedMs: 5000, requests: 0, reloads: 0, reloadsExpected: true }), 0.5);
  const full: LoadPlan = { ...plan, durationMs: undefined, requests: 1000, minReloads: 100, capMs: 1_000_000 };
  assert.equal(fractionDone({ plan: full, elapsedMs: 1000, requests: 500, reloads: 10, reloadsExpected: true }), 0.1);
  assert.equal(fractionDone({ plan: full, elapsedMs: 1000, requests: 500, reloads: 10, reloadsExpected: false }), 0.5);
  assert.equal(fractionDone({ plan: full, elapsedMs: 1000, requests: 5000, reloads: 500, reloadsExpected: true }), 1);
  const quick: LoadPlan = { ...plan, minReloads: 3, capMs: 30_000 };
  assert.equal(fractionDone({ plan: quick, elapsedMs: 10_000, requests: 0, reloads: 1, reloadsExpected: true }), 1 / 3, 'time is up, one reload of three');
  assert.equal(fractionDone({ plan: quick, elapsedMs: 15_000, requests: 0, reloads: 1, reloadsExpected: true }), 0.5, 'the cap bounds it');
  assert.equal(bar(0.5, 10), '[#####.....]');
});

const start: ProgressEvent = { t: 'start', where: 'host', strategy: 'none', kernel: '6.18', plan, intervalMs: 100, reloads: true };
const load = (ms: number, req: number): ProgressEvent => ({ t: 'load', where: 'host', strategy: 'none', elapsedMs: ms, requests: req, failed: 3, reloads: 7 });

test('not a terminal: plain lines, one per 5 s at most, and a final line per strategy', () => {
  let now = 0;
  const out = sink();
  const v = new ProgressView(out, false, () => now);
  v.event(start);
  for (let ms = 500; ms <= 10_000; ms += 500) {
    now = ms;
    v.event(load(ms, ms));
  }
  v.event({ t: 'done', where: 'host', strategy: 'none', requests: 10_000, failed: 3, reloads: 70 });
  v.event({ t: 'done', where: 'lab', strategy: 'plug', skipped: 'no lab' });
  const lines = out.text().trimEnd().split('\n');
  assert.equal(lines[0], 'bench: host none: started (kernel 6.18)');
  const loadLines = lines.filter((l) => l.includes('%'));
  assert.equal(loadLines.length, 2, out.text());
  assert.match(loadLines[0]!, /host none: \[#{12}\.{12}\] 50% 5000 req, 3 failed, 7 reloads, 5 s/);
  assert.equal(lines.at(-2), 'bench: host none: 10000 requests, 3 failed, 70 reloads');
  assert.equal(lines.at(-1), 'bench: lab plug: skipped: no lab');
  assert.ok(!out.text().includes('\r'), 'no terminal control characters in a log');
});

test('terminal: the bar is redrawn in place, final lines are permanent', () => {
  let now = 0;
  const out = sink();
  const v = new ProgressView(out, true, () => now);
  v.event(start);
  now = 2500;
  v.event(load(2500, 12_345));
  assert.ok(out.text().endsWith('\r\x1b[Khost none: [######..................] 25% 12.3k req, 3 failed, 7 reloads, 3 s'), JSON.stringify(out.text()));
  v.event({ t: 'done', where: 'host', strategy: 'none', error: 'boom' });
  assert.ok(out.text().endsWith('\r\x1b[Kbench: host none: FAILED: boom\n'), JSON.stringify(out.text()));
  v.note('lab booting');
  v.close();
  assert.ok(out.text().endsWith('bench: lab booting\n'));
});
