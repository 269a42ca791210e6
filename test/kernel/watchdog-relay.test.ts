/**
 * The watchdog shares its owner's nfqueue socket (a verdict must come from the
 * socket that bound the queue), and a socket is one receive queue for all who
 * hold it: the kernel hands each ack to whichever process reads first. A living
 * owner, reading its socket for packets, could take the acks of the watchdog's
 * own release (max-hold, `synhold release`), which then failed after three
 * timeouts ("release message 1 failed: Connection timed out", exit 20) with the
 * queue in fact released; the hold's record stayed behind with the lock free.
 * The owner now relays such acks over the owner pipe ('A' seq error).
 *
 * A release message may also be a whole nf_tables transaction (steering
 * while-holding's table delete): the headers must tile the datagram exactly.
 *
 * Real kernel, a fresh namespace per test, the real watchdog program; the
 * queue's state is read from /proc/net/netfilter/nfnetlink_queue, the tables'
 * from `nft list tables`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { withNetns, type TestNetns } from '../helpers/netns.js';
import { NfQueue, NFQNL_TYPE_CONFIG, NFQA_CFG_F_FAIL_OPEN, encodeConfig, encodeReleaseRequests } from '../../src/nfqueue/nfnetlink_queue.js';
import { readKernelQueueStats } from '../../src/nfqueue/proc.js';
import { NLM_F_REQUEST, decodeMessages, encodeMessage } from '../../src/netlink/message.js';
import { NETLINK_NETFILTER, NetlinkSocket } from '../../src/netlink/socket.js';
import { NFPROTO_IPV4 } from '../../src/netfilter/nfnetlink.js';
import { addHoldTableBatch, encodeDeleteHoldTableForWatchdog, holdTableName } from '../../src/netfilter/hold-table.js';
import { Watchdog, watchdogPath, type WatchdogEnd } from '../../src/protect/hold/watchdog.js';
import type { Fallback } from '../../src/backends/backend.js';

const QUEUE = 7200;

interface Files {
  dir: string;
  lockFd: number;
  recordPath: string;
  journalPath: string;
}

function files(): Files {
  const dir = mkdtempSync(join(tmpdir(), 'synhold-relay-'));
  const recordPath = join(dir, 'hold.json');
  writeFileSync(recordPath, '{}');
  return { dir, lockFd: openSync(join(dir, 'lock'), 'w'), recordPath, journalPath: join(dir, 'journal') };
}

function removeFiles(f: Files): void {
  closeSync(f.lockFd);
  rmSync(f.dir, { recursive: true, force: true });
}

async function queueBound(ns: TestNetns): Promise<boolean> {
  return (await readKernelQueueStats(ns.name)).some((q) => q.queue === QUEUE);
}

function startWatchdog(f: Files, fallback: Fallback, deadlineMs: number): Watchdog {
  return Watchdog.start({ fallback, deadlineMs, owner: 'process', lockFd: f.lockFd, recordPath: f.recordPath, journalPath: f.journalPath });
}

/** Waits for the watchdog's end, bounded (a watchdog that never ends fails the test instead of hanging it). */
async function ended(wd: Watchdog): Promise<WatchdogEnd> {
  const end = await Promise.race([wd.ended, sleep(5000, undefined)]);
  assert.ok(end, 'the watchdog ended within 5 s');
  return end;
}

/**
 * A request that the kernel answers only on failure (no NLM_F_ACK): on success
 * no ack ever reaches the watchdog's socket, so only a relay can end its wait.
 */
function unackedFailOpen(q: NfQueue): { seq: number; fallback: Fallback } {
  const seq = q.reserveSeq();
  const bytes = encodeMessage({
    type: NFQNL_TYPE_CONFIG,
    flags: NLM_F_REQUEST,
    seq,
    payload: encodeConfig(QUEUE, { mask: NFQA_CFG_F_FAIL_OPEN, flags: NFQA_CFG_F_FAIL_OPEN }),
  });
  return { seq, fallback: { sockets: [q.fd], messages: [{ socket: 0, bytes }], commands: [] } };
}

/** Relays `ack` every 10 ms until the watchdog ends (its release reads what arrives while it waits). */
async function relayUntilEnded(wd: Watchdog, seq: number, error: number): Promise<WatchdogEnd> {
  let done = false;
  void wd.ended.then(() => (done = true));
  const until = Date.now() + 5000;
  while (!done && Date.now() < until) {
    wd.relayAck(seq, error);
    await sleep(10);
  }
  return ended(wd);
}

/** Queue QUEUE bound in ns, with a watchdog's files; both removed after fn. */
async function withQueue<T>(ns: TestNetns, fn: (q: NfQueue, f: Files) => Promise<T>): Promise<T> {
  const f = files();
  const q = NfQueue.open({ queue: QUEUE, netns: ns.name, maxLen: 64, copyRange: 0 });
  try {
    await q.bindQueue(true);
    return await fn(q, f);
  } finally {
    q.close();
    removeFiles(f);
  }
}

test('relay protocol: an ack only the owner could read, relayed, ends the watchdog release as a success; its record goes', async () => {
  await withNetns((ns) =>
    withQueue(ns, async (q, f) => {
      const { seq, fallback } = unackedFailOpen(q);
      const wd = startWatchdog(f, fallback, 50);
      const end = await relayUntilEnded(wd, seq, 0);
      assert.deepEqual(end, { kind: 'released', cause: 'max-hold', detail: 'max-hold' });
      assert.equal(existsSync(f.recordPath), false, 'the watchdog removed the record after its release');
    }),
  );
});

test('relay protocol: a relayed error fails the release (exit 20), and the record stays for recovery', async () => {
  await withNetns((ns) =>
    withQueue(ns, async (q, f) => {
      const { seq, fallback } = unackedFailOpen(q);
      const wd = startWatchdog(f, fallback, 50);
      const end = await relayUntilEnded(wd, seq, -1 /* -EPERM */);
      assert.deepEqual(end, { kind: 'release-failed' });
      assert.equal(existsSync(f.recordPath), true);
    }),
  );
});

test('relay protocol: an ack of another sequence number answers nothing (the watchdog times out: exit 20)', async () => {
  await withNetns((ns) =>
    withQueue(ns, async (q, f) => {
      const { seq, fallback } = unackedFailOpen(q);
      const wd = startWatchdog(f, fallback, 50);
      const t0 = Date.now();
      const end = await relayUntilEnded(wd, (seq + 1000) >>> 0, 0);
      assert.deepEqual(end, { kind: 'release-failed' });
      // Three attempts of 250 ms each, after the 50 ms deadline.
      assert.ok(Date.now() - t0 >= 750, `timed out after ${Date.now() - t0} ms`);
    }),
  );
});

const ROUNDS = 20;

/**
 * One max-hold release by the watchdog while this process, the owner, reads the
 * shared socket with nothing else to do (as `synhold buffer` and protect do).
 */
async function maxHoldRound(ns: TestNetns, relay: boolean): Promise<{ end: WatchdogEnd; unbound: boolean }> {
  return withQueue(ns, async (q, f) => {
    const messages = encodeReleaseRequests(QUEUE, () => q.reserveSeq()).map((bytes) => ({ socket: 0, bytes }));
    const fallback: Fallback = { sockets: [q.fd], messages, commands: [] };
    if (relay) fallback.relayAcks = (l) => q.onReservedAck(l);
    const wd = startWatchdog(f, fallback, 20);
    const end = await ended(wd);
    return { end, unbound: !(await queueBound(ns)) };
  });
}

test(`a living owner reading the shared socket: ${ROUNDS} max-hold releases by the watchdog all succeed and unbind the queue (kernel's /proc)`, async (t) => {
  await withNetns(async (ns) => {
    // Without the relay (informational: how often the owner took the acks on this machine).
    let failedWithout = 0;
    for (let i = 0; i < ROUNDS; i++) if ((await maxHoldRound(ns, false)).end.kind === 'release-failed') failedWithout++;
    t.diagnostic(`without the relay: ${failedWithout} of ${ROUNDS} watchdog releases failed (acks taken by the owner)`);
    for (let i = 0; i < ROUNDS; i++) {
      const { end, unbound } = await maxHoldRound(ns, true);
      assert.deepEqual(end, { kind: 'released', cause: 'max-hold', detail: 'max-hold' }, `round ${i + 1}`);
      assert.ok(unbound, `round ${i + 1}: queue ${QUEUE} unbound (/proc/net/netfilter/nfnetlink_queue)`);
    }
  });
});

test('synhold release at once after a hold began (library: hold() then release()): 40 of 40 ended by the watchdog as a manual release', async () => {
  // The watchdog's signals are blocked from its birth: a SIGTERM that came before it had set up its
  // signalfd killed it unreleased (its default action), and the owner ended the hold as "watchdog gone"
  // (20 of 40 here before the fix).
  const lib = await import('../../src/index.js');
  await withNetns(async (ns) => {
    await lib.setup(lib.normalizeConfig({ ports: [16450], backend: 'nfqueue' }), { netns: ns.name });
    try {
      const ends: string[] = [];
      for (let i = 0; i < 40; i++) {
        const h = await lib.hold({ netns: ns.name, maxHoldMs: 5000 });
        await lib.release({ netns: ns.name });
        const d = await h.done;
        ends.push(`${d.cause.kind} by ${d.by}`);
      }
      assert.deepEqual(
        ends.filter((e) => e !== 'manual by watchdog'),
        [],
      );
      assert.deepEqual(await readKernelQueueStats(ns.name), [], 'no queue bound (/proc/net/netfilter/nfnetlink_queue)');
    } finally {
      await lib.teardown({ netns: ns.name });
    }
  });
});

/** `nft list tables` in the namespace (nftables' own view). */
const tables = (ns: TestNetns) => ns.exec('nft', ['list', 'tables']).trim();

test('a transaction as one release message: the watchdog sends the hold table delete (three headers, one seq) and the table is gone while its owning socket is still open', async () => {
  await withNetns(async (ns) => {
    const f = files();
    const nft = NetlinkSocket.open(NETLINK_NETFILTER, { netns: ns.name });
    try {
      const match = { family: 4 as const, port: 18080 };
      await nft.batch(addHoldTableBatch(QUEUE, [match]), { op: 'add hold table' });
      assert.equal(tables(ns), `table ip ${holdTableName(QUEUE)}`);
      const bytes = encodeDeleteHoldTableForWatchdog(QUEUE, NFPROTO_IPV4, nft.reserveSeq());
      assert.equal(decodeMessages(bytes).length, 3, 'batch begin, delete, batch end in one datagram');
      const wd = startWatchdog(f, { sockets: [nft.fd], messages: [{ socket: 0, bytes }], commands: [], relayAcks: (l) => nft.onReservedAck(l) }, 50);
      assert.deepEqual(await ended(wd), { kind: 'released', cause: 'max-hold', detail: 'max-hold' });
      // Our socket is open: the kernel's owner cleanup has not run, so the delete was the watchdog's.
      assert.equal(tables(ns), '');
    } finally {
      nft.close();
      removeFiles(f);
    }
  });
});

test('the watchdog refuses a release message whose headers do not tile it (exit 2, usage), before anything is held', () => {
  const one = encodeMessage({ type: NFQNL_TYPE_CONFIG, flags: NLM_F_REQUEST, seq: 1, payload: Buffer.alloc(8) });
  const cases = [
    Buffer.concat([one, one.subarray(0, 20)]), // a second header cut short
    Buffer.concat([one, Buffer.alloc(3)]), // trailing bytes that are no header
    (() => {
      const b = Buffer.from(one);
      b.writeUInt32LE(one.length + 4, 0); // a length past the end
      return b;
    })(),
  ];
  for (const bytes of cases) {
    const r = spawnSync(watchdogPath(), ['--deadline-ms', '1000', '--no-owner', '--send', `0:${bytes.toString('hex')}`], { encoding: 'utf8', timeout: 5000 });
    assert.equal(r.status, 2, `${bytes.toString('hex')}: ${r.stderr}`);
    assert.match(r.stderr, /^usage: synhold-watchdog/);
  }
});
