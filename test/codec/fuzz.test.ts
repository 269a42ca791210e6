/**
 * Fuzz-style robustness: random bytes, and real kernel replies with random
 * bytes flipped, fed to every decoder. A decoder may accept or reject them, but
 * a rejection must be a typed DecodeError, never a RangeError or a crash.
 * Deterministic (seeded) so a failure reproduces.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DecodeError } from '../../src/netlink/errors.js';
import { decodeAck, decodeDone, decodeMessages } from '../../src/netlink/message.js';
import { decodeQdisc } from '../../src/rtnl/tc/qdisc.js';
import { decodeFilter } from '../../src/rtnl/tc/filter.js';
import { decodeInetDiagMsg } from '../../src/sockdiag/inet_diag.js';

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'test', 'fixtures', 'rtnl');

/** xorshift32: small, seeded, good enough to spread bytes. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

const decoders: [string, (b: Buffer) => unknown][] = [
  ['messages', decodeMessages],
  ['qdisc', decodeQdisc],
  ['filter', decodeFilter],
  ['inet_diag_msg', decodeInetDiagMsg],
  ['nlmsgerr', (b) => decodeAck({ type: 2, flags: 0x300, seq: 1, pid: 0, payload: b })],
  ['done', (b) => decodeDone({ type: 3, flags: 0x200, seq: 1, pid: 0, payload: b })],
];

function feed(name: string, fn: (b: Buffer) => unknown, input: Buffer): void {
  try {
    fn(input);
  } catch (e) {
    if (!(e instanceof DecodeError)) {
      assert.fail(`${name} threw ${(e as Error).name}: ${(e as Error).message} on ${input.toString('hex')}`);
    }
  }
}

test('random bytes give only typed decode errors', () => {
  const next = rng(0x5eed);
  for (let i = 0; i < 20_000; i++) {
    const len = next() % 160;
    const b = Buffer.alloc(len);
    for (let j = 0; j < len; j++) b[j] = next() & 0xff;
    // Plausible lengths make the decoders go deeper than pure noise would.
    if (len >= 4 && next() % 2) b.writeUInt32LE(len, 0);
    for (const [name, fn] of decoders) feed(name, fn, b);
  }
});

test('mutated real kernel replies give only typed decode errors', () => {
  const next = rng(0xc0ffee);
  const seeds: Buffer[] = [];
  for (const f of readdirSync(FIXTURES).filter((x) => x.endsWith('.json'))) {
    const fx = JSON.parse(readFileSync(join(FIXTURES, f), 'utf8')) as { requestHex: string; replyHex?: string[] };
    seeds.push(Buffer.from(fx.requestHex, 'hex'));
    for (const h of fx.replyHex ?? []) seeds.push(Buffer.from(h, 'hex'));
  }
  assert.ok(seeds.length > 40);
  let n = 0;
  for (let i = 0; i < 4000; i++) {
    const base = Buffer.from(seeds[next() % seeds.length]!);
    const flips = 1 + (next() % 4);
    for (let k = 0; k < flips; k++) base[next() % base.length] = next() & 0xff;
    const cut = next() % 3 === 0 ? base.subarray(0, next() % (base.length + 1)) : base;
    feed('messages', decodeMessages, cut);
    // Past the 16-byte header: the tcmsg-level decoders.
    const body = cut.subarray(16);
    feed('qdisc', decodeQdisc, body);
    feed('filter', decodeFilter, body);
    n++;
  }
  assert.equal(n, 4000);
});
