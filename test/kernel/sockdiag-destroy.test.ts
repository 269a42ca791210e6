/**
 * sock_diag's destroy notifications (SKNLGRP_INET_TCP_DESTROY and the IPv6
 * group, what `ss -E` reads) as a way to see "the old listener is gone", against
 * polling the listening table every millisecond: how late each sees a listener's
 * close, on the real kernel, in a fresh namespace. The oracle is the clock the
 * closing process and this one share (CLOCK_MONOTONIC: Python's time.monotonic()
 * and process.hrtime), and `ss` for the cookies.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { withNetns } from '../helpers/netns.js';
import { ListenerWatcher } from '../../src/sockdiag/inet_diag.js';

const BASE_PORT = 16200;
const N = 20;

// Listens on N ports (IPv4 for even i, IPv6 for odd); on "close I" closes listener I and prints "closed I T" (T just before close()).
const SERVER = `
import socket, sys, time
base, n = int(sys.argv[1]), int(sys.argv[2])
socks = []
for i in range(n):
    fam = socket.AF_INET if i % 2 == 0 else socket.AF_INET6
    s = socket.socket(fam)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1" if fam == socket.AF_INET else "::1", base + i))
    s.listen(16)
    socks.append(s)
print("ready", flush=True)
for line in sys.stdin:
    i = int(line.split()[1])
    t = time.monotonic()
    socks[i].close()
    print("closed %d %.6f" % (i, t), flush=True)
`;

const nowS = (): number => Number(process.hrtime.bigint()) / 1e9;
const pct = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

test(`destroy notifications vs a 1 ms poll: each of ${N} listener closes seen by both; how late (measured)`, async (t) => {
  await withNetns(async (ns) => {
    const server = spawn('ip', ['netns', 'exec', ns.name, 'python3', '-c', SERVER, String(BASE_PORT), String(N)], { stdio: ['pipe', 'pipe', 'inherit'] });
    const watcher = ListenerWatcher.open({ netns: ns.name });
    const closedAt = new Map<number, number>();
    const rl = createInterface({ input: server.stdout! });
    let ready!: () => void;
    const isReady = new Promise<void>((r) => (ready = r));
    rl.on('line', (l) => {
      if (l === 'ready') ready();
      const m = /^closed (\d+) ([\d.]+)$/.exec(l);
      if (m) closedAt.set(Number(m[1]), Number(m[2]));
    });
    let unwatch: (() => void) | undefined;
    try {
      await isReady;
      const ports = Array.from({ length: N }, (_, i) => BASE_PORT + i);
      const listeners = await watcher.list(ports);
      assert.equal(listeners.length, N);
      // ss's view of the same cookies: the oracle that our decoder read them right.
      const ssCookies = new Set([...ns.exec('ss', ['-Hltne']).matchAll(/sk:([0-9a-f]+)/g)].map((m) => m[1]!));
      for (const l of listeners) assert.ok(ssCookies.has(l.cookie), `cookie ${l.cookie} as ss prints it`);
      const byCookie = new Map(listeners.map((l) => [l.cookie, l.port - BASE_PORT]));
      const eventAt = new Map<number, number>();
      unwatch = watcher.watchDestroyed(new Set(byCookie.keys()), (s) => eventAt.set(byCookie.get(s.cookie)!, nowS()));
      assert.ok(unwatch, 'the kernel accepted the destroy groups');
      const polledAt = new Map<number, number>();
      for (let i = 0; i < N; i++) {
        server.stdin!.write(`close ${i}\n`);
        // Poll every millisecond until the listener is gone from the table and its event has come (bounded: 2 s).
        const end = Date.now() + 2000;
        while (Date.now() < end && (!polledAt.has(i) || !eventAt.has(i))) {
          if (!polledAt.has(i)) {
            const now = await watcher.list([BASE_PORT + i]);
            if (now.length === 0) polledAt.set(i, nowS());
          }
          await sleep(1);
        }
      }
      await sleep(20);
      const eventMs: number[] = [];
      const pollMs: number[] = [];
      for (let i = 0; i < N; i++) {
        const c = closedAt.get(i);
        assert.ok(c !== undefined, `close ${i} reported`);
        assert.ok(polledAt.has(i), `the poll saw listener ${i} gone`);
        assert.ok(eventAt.has(i), `a destroy notification for listener ${i} (${i % 2 ? 'IPv6' : 'IPv4'})`);
        eventMs.push((eventAt.get(i)! - c) * 1000);
        pollMs.push((polledAt.get(i)! - c) * 1000);
      }
      const f = (xs: number[]) => `p50 ${pct(xs, 50).toFixed(2)} ms, max ${Math.max(...xs).toFixed(2)} ms`;
      t.diagnostic(`after close(): destroy notification ${f(eventMs)}; 1 ms poll ${f(pollMs)}`);
      // Bounds, not goals: both must see every close, within a second.
      assert.ok(Math.max(...eventMs) < 1000 && Math.max(...pollMs) < 1000);
    } finally {
      unwatch?.();
      watcher.close();
      server.kill();
    }
  });
});
