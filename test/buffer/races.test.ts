/**
 * Races reproduced on demand (examples/races/, docs/RACES.md): each scenario run
 * RUNS times per way, every run in a fresh network namespace, and the outcome
 * must be the same every time - the failure with the buffer holding the window
 * open, and its absence with the fix. Judged by the client's own errno or answer
 * and by the kernel (`ss` states, /proc/net/snmp and /proc/net/netstat counters
 * read inside the namespace, /proc/net/netfilter/nfnetlink_queue), not by
 * synhold's output.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withNetns } from '../helpers/netns.js';
import { describeReload, reloadRace, type ReloadOutcome, type ReloadWay } from '../../examples/races/reload-race.js';
import { describeKeepalive, keepaliveRace, type KeepaliveOutcome, type KeepaliveWay } from '../../examples/races/keepalive-race.js';

/** Runs per way: 20 of 20 is the claim. */
const RUNS = 20;

/**
 * Runs one way RUNS times (each in its own namespace), then checks every run and
 * reports the tally: the first failing run's outcome is in the message.
 */
async function everyRun<O>(t: { diagnostic(s: string): void }, run: () => Promise<O>, describe: (o: O) => string, check: (o: O) => void): Promise<void> {
  const outcomes: O[] = [];
  for (let i = 0; i < RUNS; i++) outcomes.push(await run());
  const tally = new Map<string, number>();
  // The run's line without the parts that vary by timing (protect's hold time).
  for (const o of outcomes) {
    const key = describe(o).replace(/after [\d.]+ ms/, 'after N ms');
    tally.set(key, (tally.get(key) ?? 0) + 1);
  }
  for (const [line, n] of tally) t.diagnostic(`${n}/${RUNS}: ${line}`);
  const held = outcomes.map((o) => (o as { protect?: { holdMs?: number } }).protect?.holdMs).filter((ms) => ms !== undefined);
  if (held.length) t.diagnostic(`protect held ${Math.round(Math.min(...held))}-${Math.round(Math.max(...held))} ms`);
  outcomes.forEach((o, i) => {
    try {
      check(o);
    } catch (e) {
      throw new Error(`run ${i + 1} of ${RUNS}: ${describe(o)}: ${(e as Error).message}`);
    }
  });
}

const reload = (way: ReloadWay, check: (o: ReloadOutcome) => void) =>
  test(`reload race, ${way}: the same outcome ${RUNS} of ${RUNS} runs`, async (t) => {
    await everyRun(
      t,
      () => withNetns((ns) => reloadRace(ns.name, way)),
      describeReload,
      (o) => {
        check(o);
        assert.equal(o.heldAtRelease, 2, 'the buffer held the handshake ACK and the request, and nothing else');
      },
    );
  });

reload('race', (o) => {
  assert.equal(o.migrateReq, 0);
  assert.equal(o.synRecvAtSwap, 1, "ss: the handshake was in the old listener's queue when it closed");
  assert.deepEqual([o.error, o.answer], ['ECONNRESET', null], "the client's own errno");
  assert.ok(o.grew.TcpOutRsts! >= 1, 'the kernel sent a RST');
  assert.equal(o.grew.TcpExtTCPMigrateReqSuccess, 0);
});

reload('protect', (o) => {
  assert.equal(o.migrateReq, 0, 'synhold setup --migrate-req off: the fix is protect alone');
  assert.equal(o.synRecvAtSwap, 0, "ss: nothing in the old listener's queue when it closed (the SYN was held)");
  assert.deepEqual([o.error, o.answer], [null, 'hello from the new server']);
  assert.equal(o.grew.TcpOutRsts, 0, 'no RST');
  assert.equal(o.protect?.exitCode, 0);
  assert.equal(o.protect?.released, 1, "protect released the client's SYN");
  assert.equal(o.protect?.releaseCause, 'reload-done', 'once the swap was seen');
});

reload('protect-late', (o) => {
  assert.equal(o.migrateReq, 0);
  assert.equal(o.synRecvAtSwap, 1, 'the SYN reached the old listener before the hold began');
  assert.deepEqual([o.error, o.answer], ['ECONNRESET', null], 'protect cannot save a handshake that began before its hold');
  assert.ok(o.grew.TcpOutRsts! >= 1);
  assert.equal(o.protect?.exitCode, 0);
  assert.equal(o.protect?.released, 0, 'protect held nothing');
});

reload('migrate', (o) => {
  assert.equal(o.migrateReq, 1, 'this kernel has net.ipv4.tcp_migrate_req');
  assert.equal(o.synRecvAtSwap, 1);
  assert.deepEqual([o.error, o.answer], [null, 'hello from the new server']);
  assert.equal(o.grew.TcpExtTCPMigrateReqSuccess, 1, 'the kernel moved the request to the new listener');
  assert.equal(o.grew.TcpOutRsts, 0, 'no RST');
});

const keepalive = (way: KeepaliveWay, check: (o: KeepaliveOutcome) => void) =>
  test(`keep-alive race, ${way}: the same outcome ${RUNS} of ${RUNS} runs`, async (t) => {
    await everyRun(t, () => withNetns((ns) => keepaliveRace(ns.name, way)), describeKeepalive, check);
  });

keepalive('race', (o) => {
  assert.equal(o.serverFinWait1, 1, 'ss: the server had closed (FIN-WAIT-1, its FIN held) when the request went');
  assert.deepEqual([o.error, o.body, o.reused], ['ECONNRESET', null, true], 'the request on the kept-alive connection was reset, no response');
  assert.match(o.message!, /^read ECONNRESET/, "the client's errno, from its read");
  assert.equal(o.grew.TcpExtTCPAbortOnData, 1, 'the kernel: data for a closed socket');
  assert.ok(o.grew.TcpOutRsts! >= 1);
});

keepalive('retry', (o) => {
  assert.equal(o.serverFinWait1, 1);
  assert.equal(o.retried, 'ECONNRESET', 'the race happened: the first try was reset');
  assert.equal(o.grew.TcpExtTCPAbortOnData, 1);
  assert.deepEqual([o.error, o.body, o.reused], [null, 'hello /second', false], 'the retry, on a fresh connection, got the answer');
});
