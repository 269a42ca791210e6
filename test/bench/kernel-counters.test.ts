// The bench's kernel counters: parsed as `nstat` names them, read from the namespace
// they belong to, and checked against `nstat` itself after the kernel counted something.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readlinkSync } from 'node:fs';
import { counterDeltas, parseProcCounters, readCounters, WATCHED_COUNTERS } from '../../bench/src/kernel-counters.js';
import { withNetns, nstat } from '../helpers/netns.js';

test('parses /proc/net/{snmp,netstat} pairs into nstat names; a value line never starts a pair', () => {
  const text = [
    'Tcp: RtoAlgorithm RtoMin MaxConn AttemptFails OutRsts',
    'Tcp: 1 200 -1 7 9',
    'TcpExt: SyncookiesSent ListenDrops',
    'TcpExt: 0 3',
    'IpExt: InNoRoutes',
    'IpExt: 4',
    '',
  ].join('\n');
  assert.deepEqual(parseProcCounters(text), {
    TcpRtoAlgorithm: 1,
    TcpRtoMin: 200,
    TcpMaxConn: -1,
    TcpAttemptFails: 7,
    TcpOutRsts: 9,
    TcpExtSyncookiesSent: 0,
    TcpExtListenDrops: 3,
    IpExtInNoRoutes: 4,
  });
  // Shifted by one line (a value line first): nothing is read as names.
  assert.deepEqual(parseProcCounters(text.split('\n').slice(1).join('\n')), { TcpExtSyncookiesSent: 0, TcpExtListenDrops: 3, IpExtInNoRoutes: 4 });
});

test('deltas: only watched counters that moved; a counter one reading lacks is left out', () => {
  const d = counterDeltas(
    { TcpAttemptFails: 5, TcpExtListenDrops: 2, TcpInSegs: 1, TcpExtTCPSynRetrans: 0 },
    { TcpAttemptFails: 8, TcpExtListenDrops: 2, TcpInSegs: 99 },
  );
  assert.deepEqual(d, { TcpAttemptFails: 3 });
  assert.ok(WATCHED_COUNTERS.includes('TcpExtTCPSynRetrans') && WATCHED_COUNTERS.includes('TcpExtListenDrops'));
});

test("a namespace's counters, read through a process inside it, move as the kernel counts and agree with nstat", async () => {
  await withNetns(async (ns) => {
    const inside = spawn('ip', ['netns', 'exec', ns.name, 'sleep', '30'], { stdio: 'ignore' });
    try {
      // ip enters the namespace, then execs sleep (same pid): wait for the first, so that its /proc/PID/net is the namespace's.
      const pid = inside.pid!;
      const ours = readlinkSync('/proc/self/ns/net');
      for (let i = 0; i < 100 && readlinkSync(`/proc/${pid}/ns/net`) === ours; i++) await new Promise((r) => setTimeout(r, 10));
      assert.notEqual(readlinkSync(`/proc/${pid}/ns/net`), ours);
      const before = readCounters(pid);
      assert.equal(before.TcpOutRsts, nstat(ns, 'TcpOutRsts'));
      // Three connects to a port nobody listens on: each is answered with a reset (TcpOutRsts) and fails (TcpAttemptFails).
      const refused = ns.exec('python3', [
        '-c',
        'import socket\nn=0\nfor _ in range(3):\n  s=socket.socket()\n  try: s.connect(("127.0.0.1", 9))\n  except ConnectionRefusedError: n+=1\n  s.close()\nprint(n)',
      ]);
      assert.equal(refused.trim(), '3');
      const after = readCounters(pid);
      const d = counterDeltas(before, after);
      assert.deepEqual(d, { TcpAttemptFails: 3 }, 'watched: the failed attempts');
      assert.equal(counterDeltas(before, after, ['TcpOutRsts']).TcpOutRsts, 3);
      // The independent oracle: nstat in the namespace says the same absolute values.
      assert.equal(after.TcpOutRsts, nstat(ns, 'TcpOutRsts'));
      assert.equal(after.TcpAttemptFails, nstat(ns, 'TcpAttemptFails'));
    } finally {
      inside.kill('SIGKILL');
    }
  });
});
