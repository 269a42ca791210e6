/**
 * `synhold protect`, `plug` and `release` as a user runs them, on a kernel with
 * sch_plug (inside the kernel lab), each test in a fresh network namespace.
 *
 * The lab is slow, and how slow depends on the machine (starting a client, a
 * node process, takes ~1 s on a 2-core EPYC in CI): so no hold here ends on a
 * timer the test races against. A command that must still be running when the
 * test's client arrives waits on a gate (a fifo) the test opens, deadlines are
 * generous, and the latency bounds are calibrated against the lab's own cost of
 * observing a release (releaseOverheadMs).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { spawnSync } from 'node:child_process';
import { closeSync, constants as fsConstants, existsSync, mkdtempSync, openSync, rmSync, writeSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { withNetns, type TestNetns } from '../helpers/netns.js';
import { startClient, startEchoServer, type Peer } from '../helpers/tcp.js';
import { synhold, synholdAsync } from '../helpers/cli.js';
import { stateDir, StateStore } from '../../src/protect/state.js';
import { isAlive, processId } from '../../src/protect/hold/process-id.js';
import { Rtnl } from '../../src/rtnl/rtnl.js';
import type { PlugState } from '../../src/backends/plug.js';
import { holdDirect } from '../helpers/plug-hold.js';

interface TcQdisc {
  kind: string;
  qlen?: number;
}
interface Status {
  setUp: boolean;
  held: boolean;
  stats: { holds: number; watchdogReleases: number; lastHold?: { reason: string; durationMs: number; released: number } };
}

const plugQlen = (ns: TestNetns) => (ns.tcJson(['-s', 'qdisc', 'show', 'dev', 'lo']) as TcQdisc[]).find((q) => q.kind === 'plug')?.qlen ?? 0;

/** Whether a hold is on, read from synhold's own record (fast: no process to spawn, so short holds are not missed). */
function holding(ns: TestNetns): boolean {
  return existsSync(join(stateDir(ns.name), 'hold.json'));
}

function status(ns: TestNetns): Status {
  return JSON.parse(synhold(['--netns', ns.name, '--json', 'status']).stdout) as Status;
}

// 60 s: generous on purpose. These waits are for things that do happen (a hold to start, a SYN
// to reach the plug); how long they take is the lab's speed, not synhold's, and CI's lab is slow.
async function until(what: string, fn: () => boolean, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/**
 * A command for protect that runs until the test opens the gate: `sh -c 'read x < FIFO'`. Unlike
 * `sleep N`, a slow client start can never outlive it. open() is idempotent; close() (in a
 * finally) opens it too, so no command is left waiting.
 */
function gate(): { cmd: string[]; open(): Promise<void>; close(): Promise<void> } {
  const dir = mkdtempSync(join(tmpdir(), 'synhold-gate-'));
  const fifo = join(dir, 'gate');
  const mk = spawnSync('mkfifo', [fifo]);
  assert.equal(mk.status, 0, `mkfifo: ${mk.stderr}`);
  let opened = false;
  const open = async (): Promise<void> => {
    if (opened) return;
    // O_NONBLOCK: ENXIO while no reader has the fifo open yet (the command is still starting);
    // a blocking open would stall this whole test process instead.
    const end = Date.now() + 60_000;
    for (;;) {
      try {
        const fd = openSync(fifo, fsConstants.O_WRONLY | fsConstants.O_NONBLOCK);
        writeSync(fd, 'go\n');
        closeSync(fd);
        opened = true;
        return;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENXIO' || Date.now() > end) throw e;
        await sleep(10);
      }
    }
  };
  return {
    cmd: ['sh', '-c', `read x < ${fifo}`],
    open,
    async close() {
      // The command may be gone already (killed with protect): then nobody reads; give up quietly.
      await Promise.race([open().catch(() => undefined), sleep(2_000)]);
      opened = true;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * What the lab itself needs to show a release to a test: from the test process releasing a plug
 * that holds a client's SYN (in-process netlink, no synhold process involved) to that client's
 * connect completing. Max of `samples`, each raw figure returned too. A watchdog release adds
 * a wake-up of the holder and its own work (reading the plug's stats, recording the hold) on
 * one slow CPU, hence bounds of 50 ms + 3x this (measured on CI's lab: kill paths of 24-78 ms
 * against overheads of 8-60 ms).
 */
async function releaseOverheadMs(ns: TestNetns, samples = 3): Promise<{ max: number; raw: number[] }> {
  const state = StateStore.for(ns.name).readSetup()!.backendState as PlugState;
  const rt = Rtnl.open({ netns: ns.name });
  const raw: number[] = [];
  try {
    for (let i = 0; i < samples; i++) {
      const hold = await holdDirect(state, { rt, netns: ns.name });
      const c = startClient(ns.name, '127.0.0.1', 16000);
      try {
        await until('the calibration SYN in the plug', () => plugQlen(ns) >= 1);
      } finally {
        const releasedAt = Date.now();
        await hold.release();
        const res = await c.result;
        assert.equal(res.error, null, 'calibration client connected');
        raw.push(res.connectedAt! - releasedAt);
      }
    }
  } finally {
    rt.close();
  }
  return { max: Math.max(...raw), raw };
}

/** The release-latency bound in this lab: 50 ms on top of 3x what observing any release costs here. */
function killBound(cal: { max: number }): number {
  return 50 + 3 * cal.max;
}

/** A namespace with an echo server on 127.0.0.1:16000 and synhold set up for that port. */
async function withProtected(fn: (ns: TestNetns) => Promise<void>): Promise<void> {
  await withNetns(async (ns) => {
    const server: Peer = await startEchoServer(ns.name, '127.0.0.1', 16000);
    try {
      const s = synhold(['--netns', ns.name, 'setup', '--port', '16000']);
      assert.equal(s.status, 0, s.stderr);
      assert.match(s.stdout, /backend plug/);
      await fn(ns);
      assert.equal(status(ns).held, false, 'nothing is held at the end');
      assert.equal(synhold(['--netns', ns.name, 'teardown']).status, 0);
    } finally {
      server.kill();
    }
  });
}

test('protect: a failing command is released and its exit status passed through', async () => {
  await withProtected(async (ns) => {
    const r = synhold(['--netns', ns.name, 'protect', '--', 'sh', '-c', 'exit 3']);
    assert.equal(r.status, 3, r.stderr);
    assert.match(r.stderr, /^synhold: held [\d.]+ ms \(\d+ SYNs released, 0 dropped; command failed\); command exited 3\n$/);
    assert.equal(status(ns).stats.holds, 1);
  });
});

test('protect: a hanging command is released at --timeout, killed, exit 124', async () => {
  await withProtected(async (ns) => {
    const t0 = Date.now();
    const r = synhold(['--netns', ns.name, 'protect', '--timeout', '1s', '--', 'sleep', '30']);
    assert.equal(r.status, 124, r.stderr);
    assert.ok(Date.now() - t0 < 10_000, `took ${Date.now() - t0} ms`);
    assert.match(r.stderr, /timeout/);
    const c = await startClient(ns.name, '127.0.0.1', 16000).result;
    assert.equal(c.error, null, 'new connections flow after the timeout');
  });
});

test('protect: exit codes 127 (not found), 126 (cannot run), 128+N (signal)', async () => {
  await withProtected(async (ns) => {
    assert.equal(synhold(['--netns', ns.name, 'protect', '--', '/nonexistent/reload']).status, 127);
    const noexec = join(mkdtempSync(join(tmpdir(), 'synhold-')), 'reload.sh');
    writeFileSync(noexec, '#!/bin/sh\nexit 0\n', { mode: 0o644 });
    assert.equal(synhold(['--netns', ns.name, 'protect', '--', noexec]).status, 126);
    assert.equal(synhold(['--netns', ns.name, 'protect', '--', 'sh', '-c', 'kill -TERM $$']).status, 128 + 15);
    assert.equal(status(ns).stats.holds, 3);
  });
});

test('protect: a connection made during the hold waits for it and completes without RST', async () => {
  await withProtected(async (ns) => {
    const g = gate();
    try {
      const p = synholdAsync(['--netns', ns.name, 'protect', '--', ...g.cmd]);
      await until('the hold', () => holding(ns));
      const c = startClient(ns.name, '127.0.0.1', 16000);
      await until('the SYN in the plug', () => plugQlen(ns) >= 1);
      await g.open();
      const r = await p.done;
      assert.equal(r.status, 0, r.stderr);
      const res = await c.result;
      assert.equal(res.error, null);
      assert.match(r.stderr, /1 SYNs released/);
    } finally {
      await g.close();
    }
  });
});

// 50 ms on an idle host; in the lab, 50 ms on top of what the lab needs to show any release
// (measured first, in the same namespace: see releaseOverheadMs). CI's lab saw 95 ms here.
test("watchdog: kill -9 of protect during a hold releases within 50 ms (+ the lab's own release overhead)", async (t) => {
  await withProtected(async (ns) => {
    const cal = await releaseOverheadMs(ns);
    const g = gate();
    try {
      const p = synholdAsync(['--netns', ns.name, 'protect', '--max-hold', '60s', '--', ...g.cmd]);
      await until('the hold', () => holding(ns));
      const c = startClient(ns.name, '127.0.0.1', 16000);
      await until('the SYN in the plug', () => plugQlen(ns) >= 1);
      const killedAt = Date.now();
      process.kill(p.pid, 'SIGKILL');
      const res = await c.result;
      assert.equal(res.error, null);
      const ms = res.connectedAt! - killedAt;
      t.diagnostic(
        `kill -9 of protect -> held connect completed: ${ms} ms; the lab's release overhead (no kill): ${cal.raw.join(', ')} ms; bound ${killBound(cal)} ms`,
      );
      assert.ok(ms < killBound(cal), `the held connection completed ${ms} ms after kill -9 (bound 50 ms + 3 x ${cal.max} ms, the lab's own release overhead)`);
      await until('the hold record to clear', () => !status(ns).held);
      const st = status(ns).stats;
      assert.equal(st.watchdogReleases, 1);
      assert.equal(st.lastHold?.reason, 'owner gone');
    } finally {
      await g.close();
    }
  });
});

test('--max-hold bounds a hold even when the command runs on', async () => {
  await withProtected(async (ns) => {
    // The command runs on until the test ends it, so only max-hold can end this hold.
    const g = gate();
    try {
      const p = synholdAsync(['--netns', ns.name, 'protect', '--max-hold', '500ms', '--', ...g.cmd]);
      await until('the hold', () => holding(ns));
      const c = startClient(ns.name, '127.0.0.1', 16000);
      const res = await c.result;
      assert.equal(res.error, null);
      assert.ok(res.connectMs! < 2500, `connect took ${res.connectMs} ms, more than max-hold allows`);
      await until('the max-hold release', () => !holding(ns));
      await g.open();
      const r = await p.done;
      assert.equal(r.status, 0);
      assert.match(r.stderr, /max-hold reached/);
    } finally {
      await g.close();
    }
  });
});

test('concurrent protects are serialised: the second holds only after the first released', async () => {
  await withProtected(async (ns) => {
    const a = synholdAsync(['--netns', ns.name, '--json', 'protect', '--', 'sleep', '1']);
    await until('the first hold', () => holding(ns));
    const b = synholdAsync(['--netns', ns.name, '--json', 'protect', '--', 'sleep', '1']);
    const [ra, rb] = await Promise.all([a.done, b.done]);
    assert.equal(ra.status, 0, ra.stderr);
    assert.equal(rb.status, 0, rb.stderr);
    const ja = JSON.parse(ra.stdout) as { holdMs: number };
    const jb = JSON.parse(rb.stdout) as { holdMs: number };
    // Each hold covered its own whole command: neither was cut short by the other's release.
    assert.ok(ja.holdMs >= 1000 && jb.holdMs >= 1000, `holds ${ja.holdMs} / ${jb.holdMs} ms`);
    assert.equal(status(ns).stats.holds, 2);
  });
});

test('plug and release by hand; a manual hold ends at --max-hold by itself', async () => {
  await withProtected(async (ns) => {
    // --max-hold 60s: this hold must last until the test releases it by hand, however long the
    // lab takes to start the client (the default 5 s did not, in CI).
    const p = synhold(['--netns', ns.name, 'plug', '--max-hold', '60s']);
    assert.equal(p.status, 0, p.stderr);
    assert.match(p.stdout, /holding \(plug, holder pid \d+\)/);
    assert.equal(status(ns).held, true);
    const c = startClient(ns.name, '127.0.0.1', 16000);
    await until('the SYN in the plug', () => plugQlen(ns) >= 1);
    const r = synhold(['--netns', ns.name, 'release']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /released by holder pid/);
    assert.equal((await c.result).error, null);

    assert.equal(synhold(['--netns', ns.name, 'plug', '--max-hold', '300ms']).status, 0);
    await until('the max-hold release', () => !holding(ns));
    assert.equal(status(ns).stats.lastHold?.reason, 'max-hold reached');
    assert.equal(synhold(['--netns', ns.name, 'release']).status, 0, 'release when nothing is held is fine');
  });
});

test('setup is idempotent, updates on other ports, and teardown restores tc state', async () => {
  await withNetns(async (ns) => {
    const before = JSON.stringify(ns.tcJson(['qdisc', 'show']));
    const a = synhold(['--netns', ns.name, 'setup', '--port', '16000']);
    assert.match(a.stdout, /created/);
    const after = JSON.stringify(ns.tcJson(['-s', 'filter', 'show', 'dev', 'lo', 'parent', '5301:']));
    const b = synhold(['--netns', ns.name, 'setup', '--port', '16000']);
    assert.match(b.stdout, /unchanged/);
    assert.equal(JSON.stringify(ns.tcJson(['-s', 'filter', 'show', 'dev', 'lo', 'parent', '5301:'])), after, 'running it twice changes nothing');
    const c = synhold(['--netns', ns.name, 'setup', '--port', '16000', '--port', '8443']);
    assert.match(c.stdout, /updated/);
    // tc's JSON keeps only one "match" per u32 filter (duplicate keys), so read its text output.
    const f = ns.exec('tc', ['filter', 'show', 'dev', 'lo', 'parent', '5301:']);
    assert.match(f, /match 00003e80\/0000ffff at 20/, 'port 16000 (0x3e80) is matched');
    assert.match(f, /match 000020fb\/0000ffff at 20/, 'port 8443 (0x20fb) is matched');
    assert.equal(ns.exec('sysctl', ['-n', 'net.ipv4.tcp_migrate_req']).trim(), '1', 'setup turned tcp_migrate_req on');
    assert.equal(synhold(['--netns', ns.name, 'teardown']).status, 0);
    assert.equal(JSON.stringify(ns.tcJson(['qdisc', 'show'])), before);
    assert.equal(ns.exec('sysctl', ['-n', 'net.ipv4.tcp_migrate_req']).trim(), '0', 'teardown put tcp_migrate_req back');
  });
});

test('full restart (stop, then start): protect keeps holding until the new listener is up, no client refused', async () => {
  await withNetns(async (ns) => {
    const old = await startEchoServer(ns.name, '127.0.0.1', 16000);
    try {
      assert.equal(synhold(['--netns', ns.name, 'setup', '--port', '16000']).status, 0);
      // The "restart": stop the old server, start a new one 500 ms later in the
      // background, and exit at once - while nothing listens on the port. It exits
      // only once the old listener is gone (ss): a kill -9 takes effect a moment
      // later, and in a loaded lab protect once saw the old listener still there at
      // the exit (the same sockets as before: released at once).
      const server = "require('net').createServer((s)=>s.pipe(s)).listen(16000,'127.0.0.1');setTimeout(()=>process.exit(0),30000)";
      const gone = `for i in $(seq 500); do ss -Hltn 'sport = :16000' | grep -q . || break; sleep 0.02; done`;
      const restart = `kill -9 ${old.child.pid}; ${gone}; (sleep 0.5; exec ${process.execPath} -e "${server}") >/dev/null 2>&1 & exit 0`;
      const p = synholdAsync(['--netns', ns.name, 'protect', '--max-hold', '10s', '--', 'sh', '-c', restart]);
      await until('the hold', () => holding(ns));
      const c = startClient(ns.name, '127.0.0.1', 16000);
      const r = await p.done;
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, /replaced 1 old listener/, 'released by the socket rule when the new listener came up');
      const res = await c.result;
      assert.equal(res.error, null, 'not refused: the SYN waited for the new listener');
      const held = /held ([\d.]+) ms/.exec(r.stderr);
      assert.ok(Number(held?.[1]) >= 400, `held ${held?.[1]} ms: less than the restart's gap`);
    } finally {
      old.kill();
      spawnSync('sh', ['-c', `ip netns pids ${ns.name} | xargs -r kill -9`]);
      synhold(['--netns', ns.name, 'teardown']);
    }
  });
});

test('kill -9 of the holder under plug: protect releases the plug itself', async () => {
  await withProtected(async (ns) => {
    const g = gate();
    const p = synholdAsync(['--netns', ns.name, 'protect', '--max-hold', '60s', '--', ...g.cmd]);
    let holder = 0;
    await until('the hold', () => {
      holder = (JSON.parse(synhold(['--netns', ns.name, '--json', 'status']).stdout) as { hold?: { holderPid: number } }).hold?.holderPid ?? 0;
      return holder > 0;
    });
    const c = startClient(ns.name, '127.0.0.1', 16000);
    await until('the SYN in the plug', () => plugQlen(ns) >= 1);
    const killedAt = Date.now();
    process.kill(holder, 'SIGKILL');
    const res = await c.result;
    assert.equal(res.error, null);
    assert.ok(res.connectedAt! - killedAt < 500, `released ${res.connectedAt! - killedAt} ms after the holder died`);
    await g.open();
    const r = await p.done;
    await g.close();
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /holder died; released by protect/);
  });
});

test('--ready: release waits until an unprotected address accepts; a protected --ready target is refused', async () => {
  await withProtected(async (ns) => {
    const bad = synhold(['--netns', ns.name, 'protect', '--ready', 'tcp:127.0.0.1:16000', '--', 'true']);
    assert.equal(bad.status, 125);
    assert.match(bad.stderr, /--ready 127\.0\.0\.1:16000 is a protected destination/);
    // CMD exits at once, but the readiness port only listens 700 ms later.
    const server = "require('net').createServer((s)=>s.end()).listen(16001,'127.0.0.1');setTimeout(()=>process.exit(0),20000)";
    const cmd = `(sleep 0.7; exec ${process.execPath} -e "${server}") >/dev/null 2>&1 & exit 0`;
    const r = synhold(['--netns', ns.name, 'protect', '--ready', 'tcp:127.0.0.1:16001', '--', 'sh', '-c', cmd]);
    assert.equal(r.status, 0, r.stderr);
    const held = Number(/held ([\d.]+) ms/.exec(r.stderr)?.[1]);
    assert.ok(held >= 600, `held only ${held} ms: did not wait for --ready`);
    spawnSync('sh', ['-c', `ip netns pids ${ns.name} | xargs -r kill -9`]);
  });
});

test("more SYNs than the plug limit: drops are counted in protect's summary and in status", async () => {
  await withNetns(async (ns) => {
    const server = await startEchoServer(ns.name, '127.0.0.1', 16000);
    try {
      // 150 bytes: room for two ~74-byte SYNs, no more.
      assert.equal(synhold(['--netns', ns.name, 'setup', '--port', '16000', '--limit', '150']).status, 0);
      const g = gate();
      const p = synholdAsync(['--netns', ns.name, 'protect', '--max-hold', '60s', '--', ...g.cmd]);
      await until('the hold', () => holding(ns));
      const clients = Array.from({ length: 5 }, () => startClient(ns.name, '127.0.0.1', 16000));
      // Oracle: tc counts the drops at the plug while the hold is still on.
      const plugDrops = () =>
        (ns.tcJson(['-s', 'qdisc', 'show', 'dev', 'lo']) as { kind: string; drops?: number }[]).find((q) => q.kind === 'plug')?.drops ?? 0;
      await until('a drop at the plug limit', () => plugDrops() >= 1);
      // Two SYNs fill the plug; the test waits for them too before ending the hold.
      await until('two SYNs held', () => plugQlen(ns) >= 2);
      await g.open();
      const r = await p.done;
      await g.close();
      assert.equal(r.status, 0, r.stderr);
      const m = /(\d+) SYNs released, (\d+) dropped/.exec(r.stderr);
      assert.ok(m && Number(m[2]) >= 1, `protect reported no drop: ${r.stderr}`);
      const st = JSON.parse(synhold(['--netns', ns.name, '--json', 'status']).stdout) as { counters: { drops: number }; stats: { dropsTotal: number } };
      assert.ok(st.counters.drops >= 1 && st.stats.dropsTotal >= 1, JSON.stringify(st));
      // The SYNs that fitted were held and delivered. (A local client whose SYN
      // was dropped at the limit retries every 500 ms as "local congestion" and
      // gives up with ETIMEDOUT after tcp_syn_retries tries, ~4 s, if the hold
      // lasts that long: docs/BACKENDS.md, scripts/plug-limit.sh.)
      const res = await Promise.all(clients.map((c) => c.result));
      assert.ok(res.filter((x) => x.error === null).length >= 2, JSON.stringify(res));
    } finally {
      server.kill();
      synhold(['--netns', ns.name, 'teardown']);
    }
  });
});

/** Runs `synhold daemon` for the namespace for the length of fn. */
async function withDaemon(ns: TestNetns, metricsPort: number, fn: (daemonPid: number) => Promise<void>): Promise<void> {
  const d = synholdAsync(['--netns', ns.name, 'daemon', '--metrics', `127.0.0.1:${metricsPort}`]);
  try {
    await until('the daemon socket', () => existsSync(join(stateDir(ns.name), 'holder.sock')));
    await fn(d.pid);
  } finally {
    try {
      process.kill(d.pid, 'SIGTERM');
    } catch {
      // already gone (the test killed it)
    }
    await d.done;
  }
}

async function metrics(port: number): Promise<Record<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return Object.fromEntries(
    text
      .split('\n')
      .filter((l) => l && !l.startsWith('#'))
      .map((l) => [l.slice(0, l.lastIndexOf(' ')), Number(l.slice(l.lastIndexOf(' ') + 1))]),
  );
}

test("daemon: protect holds through it; kill -9 of protect releases within 50 ms (+ the lab's own release overhead); metrics count the holds", async (t) => {
  await withProtected(async (ns) => {
    const cal = await releaseOverheadMs(ns);
    const g = gate();
    await withDaemon(ns, 19473, async (daemonPid) => {
      const ok = synhold(['--netns', ns.name, 'protect', '--verbose', '--', 'true']);
      assert.equal(ok.status, 0, ok.stderr);
      assert.match(ok.stderr, /via daemon/);
      const p = synholdAsync(['--netns', ns.name, 'protect', '--max-hold', '60s', '--', ...g.cmd]);
      await until('the hold', () => holding(ns));
      const c = startClient(ns.name, '127.0.0.1', 16000);
      await until('the SYN in the plug', () => plugQlen(ns) >= 1);
      const m = await metrics(19473);
      assert.equal(m['synhold_holding'], 1);
      assert.ok(m['synhold_kernel_held_packets']! >= 1, JSON.stringify(m));
      const killedAt = Date.now();
      process.kill(p.pid, 'SIGKILL');
      const res = await c.result;
      assert.equal(res.error, null);
      const ms = res.connectedAt! - killedAt;
      t.diagnostic(
        `daemon: kill -9 of protect -> held connect completed: ${ms} ms; the lab's release overhead (no kill): ${cal.raw.join(', ')} ms; bound ${killBound(cal)} ms`,
      );
      assert.ok(ms < killBound(cal), `released ${ms} ms after kill -9 of protect (bound 50 ms + 3 x ${cal.max} ms, the lab's own release overhead)`);
      await until('the hold record to clear', () => !holding(ns));
      const after = await metrics(19473);
      assert.equal(after['synhold_hold_duration_seconds_count'], 2);
      assert.equal(after['synhold_watchdog_releases_total'], 1);
      assert.equal(after['synhold_holding'], 0);
      assert.ok(isAlive(processId(daemonPid)), 'the daemon lives on');
    }).finally(() => g.close());
  });
});

test('daemon: kill -9 of the daemon during a hold, protect releases the plug itself; release asks the daemon, never kills it', async () => {
  await withProtected(async (ns) => {
    await withDaemon(ns, 19474, async () => {
      // synhold release ends a daemon-owned hold and leaves the daemon running.
      const g1 = gate();
      const p1 = synholdAsync(['--netns', ns.name, 'protect', '--max-hold', '60s', '--', ...g1.cmd]);
      await until('the hold', () => holding(ns));
      const r = synhold(['--netns', ns.name, 'release']);
      assert.match(r.stdout, /released by the daemon/);
      await g1.open();
      assert.equal((await p1.done).status, 0);
      await g1.close();
    });
    await withDaemon(ns, 19475, async (daemonPid) => {
      const g = gate();
      const p = synholdAsync(['--netns', ns.name, 'protect', '--max-hold', '60s', '--', ...g.cmd]);
      await until('the hold', () => holding(ns));
      const c = startClient(ns.name, '127.0.0.1', 16000);
      await until('the SYN in the plug', () => plugQlen(ns) >= 1);
      const killedAt = Date.now();
      process.kill(daemonPid, 'SIGKILL');
      const res = await c.result;
      assert.equal(res.error, null);
      assert.ok(res.connectedAt! - killedAt < 500, `released ${res.connectedAt! - killedAt} ms after the daemon died`);
      await g.open();
      const out = await p.done;
      await g.close();
      assert.equal(out.status, 0, out.stderr);
      assert.match(out.stderr, /holder died; released by protect/);
    });
  });
});
