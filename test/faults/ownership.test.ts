/**
 * The hold's ownership under ordinary faults, on this machine's kernel
 * (nfqueue), each test in a fresh namespace: lock contention (a second hold
 * never touches the first), signals, a /run that cannot be written, steering
 * removed behind synhold's back, stale records and reused pids, and a failed
 * re-setup. Oracles: the held client, /proc/net/netfilter/nfnetlink_queue and
 * iptables-save.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { connect } from 'node:net';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { withNetns, type TestNetns } from '../helpers/netns.js';
import { synhold, synholdAsync } from '../helpers/cli.js';
import { startClient, startEchoServer } from '../helpers/tcp.js';
import { childrenOf, commOf, kill, PORT, queueBound, queueHeld, reap, setupNfqueue, stateOf, until } from '../helpers/faults.js';
import { StateStore } from '../../src/protect/state.js';
import { FileLock } from '../../src/protect/lock.js';
import { processId } from '../../src/protect/hold/process-id.js';

async function withServer(ns: TestNetns, fn: () => Promise<void>): Promise<void> {
  const server = await startEchoServer(ns.name, '127.0.0.1', PORT);
  try {
    setupNfqueue(ns);
    await fn();
  } finally {
    server.kill();
    synhold(['--netns', ns.name, 'teardown']);
  }
}

/** A manual plug for 60 s with a client held in it; returns the watchdog's pid and the client. */
async function manualHoldWithClient(ns: TestNetns) {
  const p = synhold(['--netns', ns.name, '--json', 'plug', '--max-hold', '60s']);
  assert.equal(p.status, 0, p.stderr);
  const watchdogPid = (JSON.parse(p.stdout) as { watchdogPid: number }).watchdogPid;
  const client = startClient(ns.name, '127.0.0.1', PORT);
  await until('the SYN to be held', async () => (await queueHeld(ns)) >= 1);
  return { watchdogPid, client };
}

for (const viaDaemon of [false, true]) {
  test(`lock contention${viaDaemon ? ' through the daemon' : ''}: a protect whose --lock-wait expires behind a manual plug exits 125 promptly and leaves the plug's hold intact`, async (t) => {
    await withNetns((ns) =>
      withServer(ns, async () => {
        const pids: number[] = [];
        try {
          if (viaDaemon) {
            const d = synholdAsync(['--netns', ns.name, 'daemon']);
            pids.push(d.pid);
            await until('the daemon socket', () => existsSync(StateStore.for(ns.name).daemonSocketPath));
          }
          const { watchdogPid, client } = await manualHoldWithClient(ns);
          pids.push(watchdogPid);
          const t0 = Date.now();
          const r = synhold(['--netns', ns.name, 'protect', '--lock-wait', '1s', '--', 'true']);
          const took = Date.now() - t0;
          t.diagnostic(`second protect: exit ${r.status} after ${took} ms: ${r.stderr.trim()}`);
          assert.equal(r.status, 125, r.stderr);
          assert.match(r.stderr, /another hold is in progress/);
          assert.ok(took < 1000 + 3000, `took ${took} ms`);
          // The first hold is intact: still bound, the client still held.
          // (The count may grow: each SYN retransmission is queued too, one a second.)
          let connected = false;
          void client.result.then(() => (connected = true));
          assert.ok(await queueBound(ns), 'the queue is still bound');
          assert.ok((await queueHeld(ns)) >= 1 && !connected, 'the client is still held');
          const plug2 = synhold(['--netns', ns.name, 'plug', '--lock-wait', '200ms']);
          assert.equal(plug2.status, 4, `a second plug is busy (exit 4): ${plug2.stderr}`);
          assert.ok((await queueHeld(ns)) >= 1 && !connected, 'the client is still held');
          assert.equal(synhold(['--netns', ns.name, 'release']).status, 0);
          const res = await client.result;
          assert.equal(res.error, null);
        } finally {
          reap(pids);
        }
      }),
    );
  });
}

test('lock contention behind a long protect: the second protect gives up, the first keeps holding and releases normally', async () => {
  await withNetns((ns) =>
    withServer(ns, async () => {
      const first = synholdAsync(['--netns', ns.name, 'protect', '--max-hold', '20s', '--', 'sleep', '2']);
      try {
        await until('the first hold', () => queueBound(ns));
        const client = startClient(ns.name, '127.0.0.1', PORT);
        await until('the SYN to be held', async () => (await queueHeld(ns)) >= 1);
        const r = synhold(['--netns', ns.name, 'protect', '--lock-wait', '300ms', '--', 'true']);
        assert.equal(r.status, 125, r.stderr);
        assert.ok((await queueHeld(ns)) >= 1, 'the first hold still holds its client');
        const f = await first.done;
        assert.equal(f.status, 0, f.stderr);
        assert.match(f.stderr, /command exited/);
        assert.equal((await client.result).error, null);
      } finally {
        reap([first.pid]);
      }
    }),
  );
});

test('SIGTERM during the lock wait: protect exits 143 and never starts CMD; the hold it waited behind is untouched', async () => {
  await withNetns((ns) =>
    withServer(ns, async () => {
      const dir = mkdtempSync(join(tmpdir(), 'synhold-sig-'));
      const pids: number[] = [];
      try {
        const { watchdogPid, client } = await manualHoldWithClient(ns);
        pids.push(watchdogPid);
        const marker = join(dir, 'ran');
        const p = synholdAsync(['--netns', ns.name, 'protect', '--lock-wait', '30s', '--', 'touch', marker]);
        pids.push(p.pid);
        await sleep(500);
        kill(p.pid, 'SIGTERM');
        const r = await p.done;
        assert.equal(r.status, 143, r.stderr);
        assert.equal(existsSync(marker), false, 'CMD never ran');
        assert.ok((await queueHeld(ns)) >= 1, 'the manual hold still holds its client');
        synhold(['--netns', ns.name, 'release']);
        assert.equal((await client.result).error, null);
      } finally {
        reap(pids);
        rmSync(dir, { recursive: true, force: true });
      }
    }),
  );
});

test('SIGTERM during the hold, then a second one: protect releases, passes the signal to CMD, exits 143', async () => {
  await withNetns((ns) =>
    withServer(ns, async () => {
      const p = synholdAsync(['--netns', ns.name, 'protect', '--max-hold', '20s', '--', 'sleep', '20']);
      try {
        await until('the hold', () => queueBound(ns));
        const client = startClient(ns.name, '127.0.0.1', PORT);
        await until('the SYN to be held', async () => (await queueHeld(ns)) >= 1);
        kill(p.pid, 'SIGTERM');
        kill(p.pid, 'SIGTERM');
        const r = await p.done;
        assert.equal(r.status, 143, r.stderr);
        assert.match(r.stderr, /synhold got SIGTERM/);
        assert.equal((await client.result).error, null);
        await until('the queue to be unbound', async () => !(await queueBound(ns)), 2000);
      } finally {
        reap([p.pid]);
      }
    }),
  );
});

test('SIGTERM after protect has released and before it has reported (failpoint returned): not killed by it, its report and JSON written', async () => {
  // The late half of the test above, made deterministic: protect's own trap is gone, the CLI's keeps the signal caught.
  await withNetns((ns) =>
    withServer(ns, async () => {
      const dir = mkdtempSync(join(tmpdir(), 'synhold-late-'));
      const report = join(dir, 'report.jsonl');
      const p = synholdAsync(['--netns', ns.name, '--json', 'protect', '--report', report, '--', 'true'], { SYNHOLD_FAILPOINT: 'returned' });
      try {
        await until('protect stopped at the failpoint', () => stateOf(p.pid) === 'T');
        assert.equal(await queueBound(ns), false, 'released before the failpoint');
        kill(p.pid, 'SIGTERM');
        kill(p.pid, 'SIGCONT');
        const r = await p.done;
        assert.equal(r.signal, null, `killed by ${r.signal}: the default action ran`);
        // The work was done when the signal came: the exit status is protect's own (0) when the event
        // loop had nothing left to wait for, else 128+N; never the default action, never a lost report.
        assert.ok(r.status === 0 || r.status === 143, `exit ${r.status}: ${r.stderr}`);
        const line = JSON.parse(readFileSync(report, 'utf8')) as { exitCode: number; command: { exitCode: number } };
        assert.deepEqual([line.exitCode, line.command.exitCode], [0, 0], 'the report says what protect did: CMD exited 0');
        assert.equal((JSON.parse(r.stdout) as { exitCode: number }).exitCode, 0);
        assert.match(r.stderr, /command exited 0/);
      } finally {
        reap([p.pid]);
        rmSync(dir, { recursive: true, force: true });
      }
    }),
  );
});

test('the daemon: a second SIGTERM while it releases its hold on the first (failpoint releasing) is not the default action; it finishes and exits 0', async () => {
  await withNetns((ns) =>
    withServer(ns, async () => {
      const d = synholdAsync(['--netns', ns.name, 'daemon'], { SYNHOLD_FAILPOINT: 'releasing' });
      const pids = [d.pid];
      try {
        await until('the daemon socket', () => existsSync(StateStore.for(ns.name).daemonSocketPath));
        const p = synholdAsync(['--netns', ns.name, 'protect', '--max-hold', '20s', '--', 'sleep', '20']);
        pids.push(p.pid);
        await until('the hold, through the daemon', () => queueBound(ns));
        kill(d.pid, 'SIGTERM');
        await until('the daemon stopped in its release', () => stateOf(d.pid) === 'T');
        kill(d.pid, 'SIGTERM');
        kill(d.pid, 'SIGCONT');
        const r = await d.done;
        assert.equal(r.signal, null, `killed by ${r.signal}: the default action ran mid-release`);
        assert.equal(r.status, 0, r.stderr);
        assert.match(r.stderr, /SIGTERM: releasing and stopping/);
        assert.match(r.stderr, /SIGTERM: already releasing and stopping/);
        assert.equal(await queueBound(ns), false, 'released');
      } finally {
        reap(pids);
      }
    }),
  );
});

test('SIGTERM after max-hold ended the hold, CMD still running: protect passes it to CMD and exits 143 at once', async () => {
  await withNetns((ns) =>
    withServer(ns, async () => {
      const p = synholdAsync(['--netns', ns.name, '--json', 'protect', '--max-hold', '300ms', '--', 'sleep', '20']);
      try {
        await until('the hold', () => queueBound(ns));
        await until('max-hold to end the hold', async () => !(await queueBound(ns)), 3000);
        const sleeper = await until('CMD running', () => childrenOf(p.pid).find((pid) => commOf(pid) === 'sleep'));
        const t0 = Date.now();
        kill(p.pid, 'SIGTERM');
        const r = await p.done;
        assert.equal(r.status, 143, r.stderr);
        assert.ok(Date.now() - t0 < 2000, `exited ${Date.now() - t0} ms after the signal, not when sleep 20 ended`);
        assert.deepEqual((JSON.parse(r.stdout) as { command: unknown }).command, { exitCode: null, signal: 'SIGTERM' });
        await until('CMD killed by it', () => !existsSync(`/proc/${sleeper}`) || stateOf(sleeper) === 'Z', 2000);
      } finally {
        reap([p.pid]);
      }
    }),
  );
});

test('a state directory that cannot be written (read-only): protect fails with 125 before CMD runs, and nothing is held', async () => {
  await withNetns((ns) =>
    withServer(ns, async () => {
      // A state directory of its own on a read-only tmpfs, seeded with this namespace's setup record.
      const base = mkdtempSync(join(tmpdir(), 'synhold-ro-'));
      const src = StateStore.for(ns.name);
      const env = { SYNHOLD_RUN_DIR: base };
      const copy = spawnSync('sh', [
        '-c',
        `mount -t tmpfs -o size=1m tmpfs ${base} && mkdir -p ${base}/$(basename ${src.dir}) && cp ${src.dir}/setup.json ${base}/$(basename ${src.dir})/ && mount -o remount,ro ${base}`,
      ]);
      assert.equal(copy.status, 0, String(copy.stderr));
      try {
        const dir = mkdtempSync(join(tmpdir(), 'synhold-ro-m-'));
        const marker = join(dir, 'ran');
        const r = synhold(['--netns', ns.name, 'protect', '--', 'touch', marker], env);
        assert.equal(r.status, 125, r.stderr);
        assert.match(r.stderr, /read-only|EROFS/i);
        assert.equal(existsSync(marker), false, 'CMD never ran');
        assert.equal(await queueBound(ns), false, 'nothing held');
        rmSync(dir, { recursive: true, force: true });
      } finally {
        spawnSync('umount', [base]);
        rmSync(base, { recursive: true, force: true });
      }
    }),
  );
});

test('a full state directory: the hold record cannot be written, so protect releases at once, fails with 125, and never runs CMD', async () => {
  await withNetns((ns) =>
    withServer(ns, async () => {
      const base = mkdtempSync(join(tmpdir(), 'synhold-full-'));
      const src = StateStore.for(ns.name);
      const sub = `${base}/${src.dir.split('/').pop()}`;
      const prep = spawnSync('sh', [
        '-c',
        `mount -t tmpfs -o size=64k tmpfs ${base} && mkdir -p ${sub} && cp ${src.dir}/setup.json ${sub}/ && : > ${sub}/hold.lock && (dd if=/dev/zero of=${base}/fill bs=4k 2>/dev/null; true)`,
      ]);
      assert.equal(prep.status, 0, String(prep.stderr));
      try {
        const dir = mkdtempSync(join(tmpdir(), 'synhold-full-m-'));
        const marker = join(dir, 'ran');
        const client = startClient(ns.name, '127.0.0.1', PORT);
        const r = synhold(['--netns', ns.name, 'protect', '--', 'touch', marker], { SYNHOLD_RUN_DIR: base });
        assert.equal(r.status, 125, r.stderr);
        assert.match(r.stderr, /ENOSPC|no space/i);
        assert.equal(existsSync(marker), false, 'CMD never ran');
        assert.equal(await queueBound(ns), false, 'nothing held');
        assert.equal((await client.result).error, null);
        rmSync(dir, { recursive: true, force: true });
      } finally {
        spawnSync('umount', [base]);
        rmSync(base, { recursive: true, force: true });
      }
    }),
  );
});

test('steering removed behind synhold (raw table flushed): protect fails with 125 before CMD runs, naming what is gone', async () => {
  await withNetns((ns) =>
    withServer(ns, async () => {
      ns.exec('iptables', ['-t', 'raw', '-F']);
      const dir = mkdtempSync(join(tmpdir(), 'synhold-flush-'));
      try {
        const marker = join(dir, 'ran');
        const r = synhold(['--netns', ns.name, 'protect', '--', 'touch', marker]);
        assert.equal(r.status, 125, r.stderr);
        assert.match(r.stderr, /NFQUEUE rule .* is gone/);
        assert.equal(existsSync(marker), false, 'CMD never ran');
        assert.equal(await queueBound(ns), false);
        const st = synhold(['--netns', ns.name, 'status']);
        assert.match(st.stdout, /PROBLEM: .*is gone/);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }),
  );
});

test('a stale hold record naming a reused pid: status sees no live hold, release signals nobody, and the record goes', async () => {
  await withNetns((ns) =>
    withServer(ns, async () => {
      // An unrelated live process, recorded as if it were the hold's owner and watchdog
      // but with another start time: what a pid reused after a crash looks like.
      const bystander = spawn('sleep', ['30']);
      try {
        const id = processId(bystander.pid!)!;
        const fake = { ...id, start: String(BigInt(id.start) - 1n) };
        const store = StateStore.for(ns.name);
        writeFileSync(
          store.holdPath,
          JSON.stringify({ owner: fake, watchdog: fake, via: 'protect', backend: 'nfqueue', since: Date.now() - 1000, deadline: Date.now() + 4000 }),
        );
        const st = JSON.parse(synhold(['--netns', ns.name, '--json', 'status']).stdout) as {
          held: boolean;
          hold: { ownerAlive: boolean; watchdogAlive: boolean };
          problem?: string;
        };
        assert.equal(st.held, false);
        assert.equal(st.hold.ownerAlive, false);
        assert.match(st.problem ?? '', /processes that are gone/);
        const r = synhold(['--netns', ns.name, 'release']);
        assert.equal(r.status, 0, r.stderr);
        assert.match(r.stdout, /stale/);
        assert.equal(stateOf(bystander.pid!), 'S', 'the bystander was not signalled');
        assert.equal(existsSync(store.holdPath), false, 'the stale record is gone');
      } finally {
        bystander.kill('SIGKILL');
      }
    }),
  );
});

test('a re-setup that fails leaves the old steering in place', async () => {
  await withNetns((ns) =>
    withServer(ns, async () => {
      const before = ns.exec('iptables-save', ['-t', 'raw']).replace(/^#.*\n/gm, '');
      // This kernel has no sch_plug: asking for it fails after the old steering was removed.
      const r = synhold(['--netns', ns.name, 'setup', '--port', String(PORT), '--backend', 'plug']);
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /previous steering is back in place/);
      const after = ns.exec('iptables-save', ['-t', 'raw']).replace(/^#.*\n/gm, '');
      assert.equal(after, before);
      const st = JSON.parse(synhold(['--netns', ns.name, '--json', 'status']).stdout) as { backend: string; problem?: string };
      assert.equal(st.backend, 'nfqueue');
      assert.equal(st.problem, undefined);
    }),
  );
});

test('teardown under a live hold ends it through the watchdog first, then removes everything', async () => {
  await withNetns((ns) =>
    withServer(ns, async () => {
      const { watchdogPid, client } = await manualHoldWithClient(ns);
      try {
        const r = synhold(['--netns', ns.name, 'teardown']);
        assert.equal(r.status, 0, r.stderr);
        assert.equal((await client.result).error, null);
        assert.equal(await queueBound(ns), false);
        assert.doesNotMatch(ns.exec('iptables-save', ['-t', 'raw']), /NFQUEUE/);
      } finally {
        reap([watchdogPid]);
      }
    }),
  );
});

test('bad durations change nothing: one line, exit 2 (125 for protect)', () => {
  const a = synhold(['plug', '--max-hold', '3000000']);
  assert.equal(a.status, 2, a.stderr);
  assert.match(a.stderr, /over its maximum/);
  assert.equal(a.stderr.trim().split('\n').length, 1);
  const b = synhold(['protect', '--max-hold', '11m', '--', 'true']);
  assert.equal(b.status, 125, b.stderr);
  assert.match(b.stderr, /over its maximum/);
});

test('setup with new options under a live hold waits for it, then refuses (exit 4), and changes nothing', async () => {
  await withNetns((ns) =>
    withServer(ns, async () => {
      const { watchdogPid, client } = await manualHoldWithClient(ns);
      try {
        const before = ns.exec('iptables-save', ['-t', 'raw']).replace(/^#.*\n/gm, '');
        const r = synhold(['--netns', ns.name, 'setup', '--port', String(PORT), '--port', '16001', '--backend', 'nfqueue']);
        assert.equal(r.status, 4, r.stderr);
        assert.match(r.stderr, /a hold is in progress/);
        assert.equal(ns.exec('iptables-save', ['-t', 'raw']).replace(/^#.*\n/gm, ''), before);
        assert.ok((await queueHeld(ns)) >= 1, 'the hold is untouched');
        synhold(['--netns', ns.name, 'release']);
        assert.equal((await client.result).error, null);
      } finally {
        reap([watchdogPid]);
      }
    }),
  );
});

test('the daemon answers garbage with one error line each and keeps serving: not JSON, unknown op, out-of-range values, an over-long line', async () => {
  await withNetns((ns) =>
    withServer(ns, async () => {
      const d = synholdAsync(['--netns', ns.name, 'daemon']);
      try {
        const path = StateStore.for(ns.name).daemonSocketPath;
        await until('the daemon socket', () => existsSync(path));
        const ask = (payload: string) =>
          new Promise<string>((resolve) => {
            const s = connect(path);
            let got = '';
            s.setEncoding('utf8');
            s.on('data', (c: string) => {
              got += c;
              if (got.includes('\n')) {
                s.destroy();
                resolve(got.trim());
              }
            });
            s.on('error', () => resolve(got.trim()));
            s.on('close', () => resolve(got.trim()));
            s.write(payload);
          });
        const cases: [string, RegExp][] = [
          ['not json\n', /not JSON/],
          ['{"op":"format-disk"}\n', /unknown op/],
          ['{"op":"hold","maxHoldMs":3000000000,"lockWaitMs":0,"client":{"pid":1,"start":"1"}}\n', /maxHoldMs must be an integer/],
          ['{"op":"hold","maxHoldMs":1000,"lockWaitMs":-5,"client":{"pid":1,"start":"1"}}\n', /lockWaitMs must be an integer/],
          ['{"op":"hold","maxHoldMs":1000,"lockWaitMs":0}\n', /client must be/],
          ['{"op":"release","cause":{"kind":"recovered"}}\n', /cause.kind is not one a client may give/],
          [`${'x'.repeat(5000)}`, /longer than 4096/],
        ];
        for (const [payload, want] of cases) {
          const reply = await ask(payload);
          assert.match(reply, /"type":"error"/, `${payload.slice(0, 40)} -> ${reply}`);
          assert.match(reply, want);
        }
        assert.equal(await queueBound(ns), false, 'nothing was held');
        // Still serving: a protect through it works.
        const r = synhold(['--netns', ns.name, 'protect', '--', 'true']);
        assert.equal(r.status, 0, r.stderr);
      } finally {
        reap([d.pid]);
      }
    }),
  );
});

test('a failed first setup removes the state directory only under the hold lock: never a lock file someone holds', async () => {
  await withNetns(async (ns) => {
    const store = StateStore.for(ns.name);
    // Someone holds the hold lock in a directory with nothing set up (as a protect that found
    // no setup record does for a moment): a failing setup must leave that file alone.
    store.ensure();
    const held = FileLock.tryAcquire(store.holdLockPath);
    assert.ok(held, 'took the hold lock');
    const before = statSync(store.holdLockPath).ino;
    try {
      const r = synhold(['--netns', ns.name, 'setup', '--port', String(PORT), '--backend', 'plug']);
      assert.notEqual(r.status, 0, 'setup --backend plug fails on this kernel (no sch_plug)');
      assert.equal(statSync(store.holdLockPath).ino, before, 'the held lock file is still the one named by the path');
    } finally {
      held.release();
    }
    // With the lock free, the same failure leaves no trace.
    const r2 = synhold(['--netns', ns.name, 'setup', '--port', String(PORT), '--backend', 'plug']);
    assert.notEqual(r2.status, 0);
    assert.equal(existsSync(store.dir), false, 'nothing left of the failed setup');
  });
});
