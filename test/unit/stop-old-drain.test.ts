/**
 * --stop-old's drain (src/protect/stop-old.ts drainOld): how long the hold waits, before the
 * signal, for what is on its way into the old listeners. Scripted samples on a fake clock, one
 * sample per millisecond as protect's 1 ms poll takes them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DRAIN_MAX_MS, DRAIN_STALL_MS, drainBounds, drainOld, type DrainBounds, type DrainLeft } from '../../src/protect/stop-old.js';

/** Runs drainOld over `counts` (queued + handshaking per ms; the last repeats); returns the ms it signalled at and what was left. */
async function run(counts: Array<[number, number]>, stopAt = Infinity, bounds?: DrainBounds): Promise<{ ms: number; left: DrainLeft; samples: number }> {
  let t = 0;
  let samples = 0;
  const left = await drainOld(
    async () => {
      const [queued, handshaking] = counts[Math.min(samples++, counts.length - 1)]!;
      return { queued, handshaking };
    },
    async () => {
      t += 1;
    },
    () => t,
    () => t >= stopAt,
    bounds,
  );
  return { ms: t, left, samples };
}

test('drain: nothing on its way: signal at once, one sample', async () => {
  assert.deepEqual(await run([[0, 0]]), { ms: 0, left: { queued: 0, handshaking: 0 }, samples: 1 });
});

test('drain: waits for the accept queue and the handshakes both to empty', async () => {
  // the queue empties at 3 ms, but a handshake completes (into the queue) only at 6, accepted at 8
  const r = await run([
    [2, 1],
    [2, 1],
    [1, 1],
    [0, 1],
    [0, 1],
    [0, 1],
    [1, 0],
    [1, 0],
    [0, 0],
  ]);
  assert.deepEqual(r.left, { queued: 0, handshaking: 0 });
  assert.equal(r.ms, 8);
});

test('drain: a slow old server that keeps accepting is waited for past the stall bound, while it makes progress', async () => {
  // one connection accepted every 40 ms (under DRAIN_STALL_MS), 8 queued: 320 ms
  const counts: Array<[number, number]> = [];
  for (let q = 8; q >= 0; q--) for (let i = 0; i < (q === 0 ? 1 : 40); i++) counts.push([q, 0]);
  const r = await run(counts);
  assert.deepEqual(r.left, { queued: 0, handshaking: 0 });
  assert.equal(r.ms, 320);
  assert.ok(r.ms > DRAIN_STALL_MS && r.ms < DRAIN_MAX_MS);
});

test('drain: no progress for DRAIN_STALL_MS (an old server that stopped accepting, a handshake that never ends): the signal goes, and what is left is said', async () => {
  const r = await run([
    [3, 2],
    [3, 2],
    [2, 2],
  ]);
  assert.deepEqual(r.left, { queued: 2, handshaking: 2 });
  // the last progress at 2 ms, then DRAIN_STALL_MS without
  assert.equal(r.ms, 2 + DRAIN_STALL_MS);
});

test('drain: a count that grows (a SYN let through just before the hold) is not progress', async () => {
  const r = await run([
    [1, 0],
    [1, 1],
    [1, 1],
  ]);
  assert.equal(r.ms, DRAIN_STALL_MS);
  assert.deepEqual(r.left, { queued: 1, handshaking: 1 });
});

test('drain: never past DRAIN_MAX_MS, however steady the progress', async () => {
  const counts: Array<[number, number]> = [];
  for (let q = 10_000; q > 0; q--) counts.push([q, 0]);
  const r = await run(counts);
  assert.equal(r.ms, DRAIN_MAX_MS);
  assert.ok(r.left.queued > 0);
});

test('drain: the hold ending (released by its owner, a signal to protect) ends the wait at once', async () => {
  const r = await run([[5, 5]], 7);
  assert.equal(r.ms, 7);
  assert.deepEqual(r.left, { queued: 5, handshaking: 5 });
});

test('drain bounds: short with tcp_migrate_req=1 (the kernel moves what is left), until empty up to --settle-wait without it', () => {
  assert.deepEqual(drainBounds('1', 2000), { stallMs: DRAIN_STALL_MS, maxMs: DRAIN_MAX_MS });
  for (const off of ['0', undefined]) assert.deepEqual(drainBounds(off, 2000), { stallMs: Infinity, maxMs: 2000 });
});

test('drain without migration: an old server that accepts 200 ms apart is waited for until its queue is empty', async () => {
  const counts: Array<[number, number]> = [];
  for (let q = 3; q >= 0; q--) for (let i = 0; i < (q === 0 ? 1 : 200); i++) counts.push([q, 0]);
  const r = await run(counts, Infinity, drainBounds('0', 2000));
  assert.deepEqual(r.left, { queued: 0, handshaking: 0 });
  assert.equal(r.ms, 600);
});

test('drain without migration: a queue that never empties is signalled at --settle-wait, and said', async () => {
  const r = await run([[2, 1]], Infinity, drainBounds('0', 700));
  assert.equal(r.ms, 700);
  assert.deepEqual(r.left, { queued: 2, handshaking: 1 });
});
