/**
 * The hold totals (src/protect/state.ts): each finished hold is one appended journal line, and the
 * journal is folded into stats.json once it passes JOURNAL_FOLD_BYTES. What status and the metrics
 * read (readStats) must be the same before and after a fold, count the watchdogs' own lines, and
 * skip a torn or foreign line rather than fail. The files are read back directly as the oracle.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { JOURNAL_FOLD_BYTES, StateStore, type LastHold } from '../../src/protect/state.js';

function withStore(fn: (store: StateStore) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'synhold-state-'));
  try {
    fn(new StateStore(join(dir, 'ns')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const hold = (i: number, over: Partial<LastHold> = {}): LastHold => ({
  startedAt: new Date(1_800_000_000_000 + i).toISOString(),
  durationMs: 10 + i,
  released: i,
  drops: i % 2,
  reason: 'command exited',
  cause: 'command-exited',
  ...over,
});

test('a hold is one appended line; the totals count it, the watchdogs lines, and skip torn or foreign lines', () => {
  withStore((store) => {
    assert.deepEqual(store.readStats(), { holds: 0, releasedTotal: 0, dropsTotal: 0, watchdogReleases: 0 });
    store.recordHold(hold(1));
    store.recordHold(hold(2, { cause: 'owner-gone', reason: 'owner gone' }));
    assert.equal(existsSync(join(store.dir, 'stats.json')), false, 'no rewrite of stats.json per hold');
    assert.equal(readFileSync(store.journalPath, 'utf8').split('\n').filter(Boolean).length, 2, 'one line per hold');
    assert.equal(statSync(store.journalPath).mode & 0o777, 0o600);
    // A watchdog's own release (native/watchdog.c's format), a torn line, a foreign one, a JSON line missing fields.
    appendFileSync(store.journalPath, '1800000000500 max-hold 300\n{"startedAt":"x","durationMs":1\nhello\n{"startedAt":"x"}\n');
    store.recordHold(hold(3));
    // A line left torn at the end (a write cut short): the next hold's line is still whole.
    appendFileSync(store.journalPath, '{"startedAt":"2026-');
    store.recordHold(hold(4));
    const s = store.readStats();
    assert.equal(s.holds, 5);
    assert.equal(s.releasedTotal, 1 + 2 + 0 + 3 + 4);
    assert.equal(s.dropsTotal, 1 + 0 + 0 + 1 + 0);
    assert.equal(s.watchdogReleases, 2, 'owner-gone and the watchdog max-hold line');
    assert.deepEqual(s.lastHold, hold(4));
  });
});

test('past JOURNAL_FOLD_BYTES the journal is folded into stats.json, and the totals do not change', () => {
  withStore((store) => {
    const size = () => (existsSync(store.journalPath) ? statSync(store.journalPath).size : 0);
    let folds = 0;
    let expected = { holds: 0, releasedTotal: 0, dropsTotal: 0, watchdogReleases: 0 };
    const n = Math.ceil(JOURNAL_FOLD_BYTES / 100) + 20; // lines are over 100 bytes: at least one fold
    for (let i = 0; i < n; i++) {
      const before = size();
      store.recordHold(hold(i));
      const line = JSON.stringify(hold(i)).length + 2; // with its leading and trailing newline
      if (size() === 0) {
        folds += 1;
        assert.ok(before + line >= JOURNAL_FOLD_BYTES, `folded at ${before + line} bytes, under the threshold`);
        const onDisk = JSON.parse(readFileSync(join(store.dir, 'stats.json'), 'utf8')) as { holds: number };
        assert.equal(onDisk.holds, i + 1, 'stats.json has every hold up to the fold');
      } else {
        assert.equal(size(), before + line, 'one line appended');
        assert.ok(size() < JOURNAL_FOLD_BYTES, 'no journal past the threshold');
      }
      expected = { holds: i + 1, releasedTotal: expected.releasedTotal + i, dropsTotal: expected.dropsTotal + (i % 2), watchdogReleases: 0 };
      assert.deepEqual(store.readStats(), { ...expected, lastHold: hold(i) }, `after hold ${i}`);
    }
    assert.ok(folds >= 1, 'the journal was folded');
  });
});
