// Charging failed requests to reloads, and to the way each reload's hold ended.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { attributeFailures } from '../../bench/src/attribution.js';

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
