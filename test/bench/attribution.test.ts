// Charging failed requests to reloads, and to the way each reload's hold ended.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { attributeFailures, placeSlow } from '../../bench/src/attribution.js';

test('each failure goes to the last reload that started before it; counts per release reason', () => {
  const reloads = [
    { startedAt: 1000, reason: 'replaced 1 old listener' },
    { startedAt: 1100, reason: 'command exited' },
    { startedAt: 1200, reason: 'replaced 1 old listener' },
    { startedAt: 1300, reason: 'command exited' },
  ];
  // unsorted input on purpose; 999 is before the first reload; 1100 belongs to the 2nd (start inclusive)
  const a = attributeFailures([1150, 999, 1100, 1120, 1350, 5000], [...reloads].reverse());
  assert.equal(a.failedRequests, 6);
  assert.equal(a.beforeFirstReload, 1);
  assert.equal(a.reloadsWithFailures, 2);
  assert.equal(a.maxPerReload, 3);
  assert.deepEqual(a.byReason, {
    'replaced 1 old listener': { holds: 2, failedRequests: 0, reloadsWithFailures: 0 },
    'command exited': { holds: 2, failedRequests: 5, reloadsWithFailures: 2 },
  });
});

test('no reasons (unprotected reloads, or a missing hold line): no per-reason split', () => {
  const a = attributeFailures([10, 20], [{ startedAt: 5 }, { startedAt: 15, reason: 'x' }]);
  assert.equal(a.byReason, undefined);
  assert.equal(a.reloadsWithFailures, 2);
  assert.deepEqual(attributeFailures([], []), { failedRequests: 0, beforeFirstReload: 0, reloadsWithFailures: 0, maxPerReload: 0 });
});

test("slow requests: each placed in its reload and, with hold windows, before, in or after that reload's hold", () => {
  const reloads = [{ startedAt: 1000 }, { startedAt: 2000 }, { startedAt: 3000 }];
  // reload 1 holds 1050-1080, reload 2 has no hold (protect failed, say), reload 3 holds 3200-3210
  const holds = [
    { startedAt: 3200, endedAt: 3210 },
    { startedAt: 1050, endedAt: 1080 },
  ];
  const slow = [
    { startedAt: 900, latencyMs: 600 }, // before the first reload
    { startedAt: 1010, latencyMs: 1019 }, // before reload 1's hold, 40 ms before it
    { startedAt: 1060, latencyMs: 700 }, // in it, 10 ms in
    { startedAt: 1080, latencyMs: 520 }, // at its end: after the release (the window is [start, end))
    { startedAt: 2500, latencyMs: 800 }, // reload 2: no hold of its own (reload 1's is not charged)
    { startedAt: 3300, latencyMs: 1500 }, // after reload 3's release, 90 ms after
  ];
  const p = placeSlow(slow, reloads, holds, 500);
  assert.equal(p.thresholdMs, 500);
  assert.equal(p.requests, 6);
  assert.equal(p.beforeFirstReload, 1);
  assert.equal(p.reloadsWithSlow, 3);
  assert.deepEqual(p.byPhase, { 'before the hold': 1, 'during the hold': 1, 'after the release': 2, 'no hold': 1 });
  assert.deepEqual(p.slowest, [
    { latencyMs: 1500, sinceReloadMs: 300, phase: 'after the release', phaseMs: 90 },
    { latencyMs: 1019, sinceReloadMs: 10, phase: 'before the hold', phaseMs: 40 },
    { latencyMs: 800, sinceReloadMs: 500, phase: 'no hold' },
    { latencyMs: 700, sinceReloadMs: 60, phase: 'during the hold', phaseMs: 10 },
    { latencyMs: 600 },
    { latencyMs: 520, sinceReloadMs: 80, phase: 'after the release', phaseMs: 0 },
  ]);
  // Without hold windows (unprotected reloads): reloads only, no phases; `keep` bounds the list.
  const q = placeSlow(slow, reloads, undefined, 500, 2);
  assert.equal(q.byPhase, undefined);
  assert.deepEqual(q.slowest, [
    { latencyMs: 1500, sinceReloadMs: 300 },
    { latencyMs: 1019, sinceReloadMs: 10 },
  ]);
  assert.deepEqual(placeSlow([], [], [], 500), { thresholdMs: 500, requests: 0, beforeFirstReload: 0, reloadsWithSlow: 0, byPhase: {}, slowest: [] });
});
