/**
 * `synhold protect`, `plug` and `release` as a user runs them, on a kernel with
 * sch_plug (inside the kernel lab), each test in a fresh network namespace.
 *
 * The lab is slow, and how slow depends on the machine (starting a client, a
 * node process, takes ~1 s on a 2-core EPYC in CI): so no hold here ends on a
 * timer the test races against. A command that must still be running when the
 * test's client arrives waits on a gate (a fifo) the test opens, deadlines are
 * generous, and the latency bounds are calibrated against the lab's own cost of
 * observing a release (releaseOverheadMs, in test/helpers/lab-faults.ts).
 *
 * A hold is owned in-process by protect (or by the daemon; `synhold plug` leaves
 * it to its watchdog), and the native watchdog is the dead-man's switch.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { withNetns, type TestNetns } from '../helpers/netns.js';
import { startClient, startEchoServer, type Peer } from '../helpers/tcp.js';
import { CLI, synhold, synholdAsync } from '../helpers/cli.js';
import { pipe } from '../../src/host/child.js';
import { StateStore } from '../../src/protect/state.js';
import { isAlive, processId } from '../../src/protect/hold/process-id.js';
import {
  armedClients,
  gate,
  holding,
  killBound,
  plugOf,
  plugQlen,
  releaseOverheadMs,
  status,
  synholdLive,
  until,
  type Calibration,
} from '../helpers/lab-faults.js';

/**
 * The lab's own release overhead, measured in the namespace (see releaseOverheadMs): a release
 * by a hold's own path adds the wake-up of the process that releases (the watchdog, protect, the
 * daemon) and its own work on one slow CPU, hence bounds of 50 ms + 3x this (measured on CI's
 * lab: kill paths of 24-78 ms against overheads of 8-60 ms).
 */
async function calibrate(ns: TestNetns): Promise<Calibration> {
  return releaseOverheadMs(ns, await armedClients(ns.name, 3));
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
    const cal = await calibrate(ns);
    const g = gate();
    try {
      const p = synholdAsync(['--netns', ns.name, 'protect', '--max-hold', '60s', '--', ...g.cmd]);
      await until('the hold', () => holding(ns));
      // Who holds, as status reports it: protect owns the hold in-process, a live watchdog is its switch.
      const h = status(ns).hold;
      assert.ok(h, 'status reports the hold');
      assert.equal(h.via, 'protect');
      assert.equal(h.owner.pid, p.pid);
      assert.equal(h.backend, 'plug');
      assert.ok(h.ownerAlive && h.watchdogAlive && !h.watchdogStopped, JSON.stringify(h));
      assert.ok(h.deadline - h.since === 60_000, `deadline ${h.deadline} is since ${h.since} + max-hold`);
      const c = startClient(ns.name, '127.0.0.1', 16000);
      await until('the SYN in the plug', () => plugQlen(ns) >= 1);
      const heldAtKill = plugOf(ns);
      const killedAt = Date.now();
      process.kill(p.pid, 'SIGKILL');
      const res = await c.result;
      assert.equal(res.error, null);
      const ms = res.connectedAt! - killedAt;
      // What the kernel did (a late connect is a release that came late or a SYN that was lost and sent again).
      const after = plugOf(ns);
      const synRetrans = /TcpExtTCPSynRetrans\s+(\d+)/.exec(ns.exec('nstat', ['-az', 'TcpExtTCPSynRetrans']))?.[1];
      t.diagnostic(
        `kill -9 of protect -> held connect completed: ${ms} ms; the lab's release overhead (no kill): ${cal.raw.join(', ')} ms; bound ${killBound(cal)} ms; ` +
          `plug at the kill: qlen ${heldAtKill?.qlen}, ${heldAtKill?.packets} packets sent; after: ${after?.packets} sent; SYN retransmits in the namespace: ${synRetrans}`,
      );
      assert.ok(ms < killBound(cal), `the held connection completed ${ms} ms after kill -9 (bound 50 ms + 3 x ${cal.max} ms, the lab's own release overhead)`);
      await until('the hold record to clear', () => !status(ns).held);
      // The watchdog released on its own (the owner pipe's EOF) and logged it; status folds that in.
      const st = status(ns).stats;
      assert.equal(st.watchdogReleases, 1);
      assert.equal(st.lastHold?.cause, 'owner-gone');
      assert.equal(st.lastHold?.reason, 'released by the watchdog (owner-gone)');
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
    const m = /holding \(plug, watchdog pid (\d+)\); released by `synhold release` or in 60000 ms at the latest/.exec(p.stdout);
    assert.ok(m, p.stdout);
    const watchdogPid = Number(m[1]);
    // `synhold plug` has exited; the hold lives on in its watchdog alone.
    const st = status(ns);
    assert.equal(st.held, true);
    assert.equal(st.hold?.via, 'plug');
    assert.equal(st.hold?.watchdog.pid, watchdogPid);
    assert.equal(st.hold?.ownerAlive, false, 'the plug command is gone');
    assert.equal(st.hold?.watchdogAlive, true);
    assert.equal(st.problem, undefined, 'a manual hold kept by its watchdog is not a problem');
    const c = startClient(ns.name, '127.0.0.1', 16000);
    await until('the SYN in the plug', () => plugQlen(ns) >= 1);
    const r = synhold(['--netns', ns.name, 'release']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`released by the hold's watchdog \\(pid ${watchdogPid}, holding for plug pid ${st.hold!.owner.pid}\\)`));
    assert.equal((await c.result).error, null);
    assert.ok(!isAlive(st.hold!.watchdog), 'the watchdog exited after releasing');
    const manual = status(ns).stats.lastHold;
    assert.equal(manual?.cause, 'manual');
    assert.equal(manual?.reason, 'released by the watchdog (signal)');

    assert.equal(synhold(['--netns', ns.name, 'plug', '--max-hold', '300ms']).status, 0);
    await until('the max-hold release', () => !holding(ns));
    await until('the max-hold release to be recorded', () => status(ns).stats.lastHold?.cause === 'max-hold');
    assert.equal(status(ns).stats.lastHold?.reason, 'released by the watchdog (max-hold)');
    const none = synhold(['--netns', ns.name, 'release']);
    assert.equal(none.status, 0, 'release when nothing is held is fine');
    assert.match(none.stdout, /nothing was held/);
    assert.equal(status(ns).stats.holds, 2);
  });
});

test("setup --egress-topology prio (the seed's) is idempotent, updates on other ports, and teardown restores tc state", async () => {
  await withNetns(async (ns) => {
    const before = JSON.stringify(ns.tcJson(['qdisc', 'show']));
    const a = synhold(['--netns', ns.name, 'setup', '--port', '16000', '--egress-topology', 'prio']);
    assert.match(a.stdout, /created/);
    const after = JSON.stringify(ns.tcJson(['-s', 'filter', 'show', 'dev', 'lo', 'parent', '5301:']));
    const b = synhold(['--netns', ns.name, 'setup', '--port', '16000', '--egress-topology', 'prio']);
    assert.match(b.stdout, /unchanged/);
    assert.equal(JSON.stringify(ns.tcJson(['-s', 'filter', 'show', 'dev', 'lo', 'parent', '5301:'])), after, 'running it twice changes nothing');
    const c = synhold(['--netns', ns.name, 'setup', '--port', '16000', '--port', '8443', '--egress-topology', 'prio']);
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

test('setup with the default topology (auto: clsact, its filters only while holding) is idempotent, updates on other ports, and teardown restores tc state', async () => {
  await withNetns(async (ns) => {
    // Every device's qdiscs and the links: the IFB device and its plug are setup's, lo's hook is a hold's.
    const tcState = () => JSON.stringify([ns.tcJson(['qdisc', 'show']), (ns.ipJson(['link', 'show']) as { ifname: string }[]).map((l) => l.ifname)]);
    const before = tcState();
    const loBefore = ns.tcJson(['qdisc', 'show', 'dev', 'lo']);
    const a = synhold(['--netns', ns.name, 'setup', '--port', '16000']);
    assert.match(a.stdout, /created: .*topology clsact .*steering while-holding/);
    const after = tcState();
    assert.notEqual(after, before, 'setup made the IFB device and its plug');
    assert.deepEqual(ns.tcJson(['filter', 'show', 'dev', 'lo', 'egress']), [], 'no filter on lo between holds');
    const b = synhold(['--netns', ns.name, 'setup', '--port', '16000']);
    assert.match(b.stdout, /unchanged/);
    assert.equal(tcState(), after, 'running it twice changes nothing');
    const c = synhold(['--netns', ns.name, 'setup', '--port', '16000', '--port', '8443']);
    assert.match(c.stdout, /updated/);
    // The filters exist during a hold: a hold by hand shows them. tc's JSON keeps only one "match"
    // per u32 filter (duplicate keys), so read its text output.
    assert.equal(synhold(['--netns', ns.name, 'plug', '--max-hold', '20s']).status, 0);
    const f = ns.exec('tc', ['filter', 'show', 'dev', 'lo', 'egress']);
    assert.equal(synhold(['--netns', ns.name, 'release']).status, 0);
    assert.match(f, /match 00003e80\/0000ffff at 20/, 'port 16000 (0x3e80) is matched');
    assert.match(f, /match 000020fb\/0000ffff at 20/, 'port 8443 (0x20fb) is matched');
    assert.deepEqual(ns.tcJson(['qdisc', 'show', 'dev', 'lo']), loBefore, 'the release took the hook');
    assert.equal(synhold(['--netns', ns.name, 'teardown']).status, 0);
    assert.equal(tcState(), before);
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

test("kill -9 of the watchdog under plug: protect releases the plug itself (it does not hold with no dead-man's switch)", async (t) => {
  await withProtected(async (ns) => {
    const g = gate();
    try {
      const p = synholdAsync(['--netns', ns.name, '--json', 'protect', '--max-hold', '60s', '--', ...g.cmd]);
      const watchdog = await until('the hold', () => status(ns).hold?.watchdog);
      assert.ok(isAlive(watchdog), 'status names a live watchdog');
      const c = startClient(ns.name, '127.0.0.1', 16000);
      await until('the SYN in the plug', () => plugQlen(ns) >= 1);
      const killedAt = Date.now();
      process.kill(watchdog.pid, 'SIGKILL');
      const res = await c.result;
      assert.equal(res.error, null);
      t.diagnostic(`kill -9 of the watchdog -> held connect completed: ${res.connectedAt! - killedAt} ms`);
      assert.ok(res.connectedAt! - killedAt < 500, `released ${res.connectedAt! - killedAt} ms after the watchdog died`);
      await g.open();
      const r = await p.done;
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, /watchdog died; released by its owner/);
      const j = JSON.parse(r.stdout) as { releaseCause: string; releasedBy: string };
      assert.equal(j.releaseCause, 'watchdog-gone');
      assert.equal(j.releasedBy, 'owner');
      assert.equal(status(ns).stats.lastHold?.reason, 'watchdog died; released by its owner');
    } finally {
      await g.close();
    }
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
      const plugDrops = () => (ns.tcJson(['-s', 'qdisc', 'show']) as { kind: string; drops?: number }[]).find((q) => q.kind === 'plug')?.drops ?? 0;
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

/**
 * Runs `synhold daemon` for the namespace for the length of fn, with a witness of its death:
 * the daemon's stdout is a pipe read by a bash loop that prints $EPOCHREALTIME at end of file.
 * The kernel closes a process's files as it dies (the daemon passes its stdout to no child: its
 * watchdogs get /dev/null), and the watchdog learns of the death the same way (its owner pipe's
 * end of file), so the witness sees the death no earlier than the watchdog can, from a process
 * that waits as the watchdog does: not when SIGKILL was sent (in the lab the kernel took 11-87 ms
 * to close a killed daemon's files, over 18 runs) nor when this test's event loop gets round to it.
 * On the lab's one CPU the witness may run after the watchdog (up to 15 ms after the held client
 * connected, in those runs): that can only shorten the time measured, by that much.
 */
async function withDaemon(ns: TestNetns, metricsPort: number, fn: (daemonPid: number, daemonDied: () => Promise<number>) => Promise<void>): Promise<void> {
  const [r, w] = pipe();
  const witness = spawn('bash', ['-c', 'while read -r _; do :; done; echo "$EPOCHREALTIME"'], { stdio: [r, 'pipe', 'inherit'] });
  let witnessOut = '';
  witness.stdout!.on('data', (d: Buffer) => (witnessOut += d.toString()));
  const witnessed = new Promise<number>((resolve) => witness.on('close', () => resolve(Math.round(Number(witnessOut.trim().replace(',', '.')) * 1000))));
  const d = spawn(process.execPath, [CLI, '--netns', ns.name, 'daemon', '--metrics', `127.0.0.1:${metricsPort}`], { stdio: ['ignore', w, 'pipe'] });
  d.stderr!.resume(); // its log lines are not this test's output
  closeSync(r);
  closeSync(w);
  const exited = new Promise<void>((resolve) => d.on('close', () => resolve()));
  try {
    await until('the daemon socket', () => existsSync(StateStore.for(ns.name).daemonSocketPath));
    await fn(d.pid!, () => witnessed);
  } finally {
    try {
      process.kill(d.pid!, 'SIGTERM');
    } catch {
      // already gone (the test killed it)
    }
    await exited;
    await witnessed;
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
    const cal = await calibrate(ns);
    const g = gate();
    await withDaemon(ns, 19473, async (daemonPid) => {
      // Through the daemon (the metrics below count this hold): protect only asks, the daemon starts the watchdog.
      const ok = synhold(['--netns', ns.name, 'protect', '--verbose', '--', 'true']);
      assert.equal(ok.status, 0, ok.stderr);
      assert.match(ok.stderr, /holding new connections to port 16000 \(plug, watchdog pid \d+\)/);
      const p = synholdAsync(['--netns', ns.name, 'protect', '--max-hold', '60s', '--', ...g.cmd]);
      await until('the hold', () => holding(ns));
      // The daemon owns the hold, for protect (its client), with a watchdog of its own.
      const h = status(ns).hold;
      assert.equal(h?.via, 'daemon');
      assert.equal(h?.owner.pid, daemonPid);
      assert.equal(h?.client?.pid, p.pid);
      assert.ok(h?.watchdogAlive, JSON.stringify(h));
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
      const clearedAt = Date.now();
      assert.equal((await metrics(19473))['synhold_holding'], 0, 'the record gone is not holding, in metrics as in status');
      // The watchdog removed the record and then exits; the daemon hears of its release (and counts
      // the hold) at that exit, once its sockets are closed: a lag that must stay short.
      const after = await until(
        'the daemon to count the hold',
        async () => {
          const m2 = await metrics(19473);
          return m2['synhold_hold_duration_seconds_count'] === 2 && m2;
        },
        1000,
      );
      t.diagnostic(`daemon counted the watchdog's release ${Date.now() - clearedAt} ms after the record cleared`);
      assert.equal(after['synhold_watchdog_releases_total'], 1);
      assert.equal(after['synhold_holding'], 0);
      assert.ok(isAlive(processId(daemonPid)), 'the daemon lives on');
    }).finally(() => g.close());
  });
});

test("daemon: `synhold release` ends a daemon-owned hold through its watchdog and leaves the daemon running; protect then exits with CMD's status", async (t) => {
  await withProtected(async (ns) => {
    await withDaemon(ns, 19474, async (daemonPid) => {
      const g1 = gate();
      try {
        const p1 = synholdLive(['--netns', ns.name, 'protect', '--max-hold', '60s', '--', ...g1.cmd]);
        await until('the hold', () => holding(ns));
        const c = startClient(ns.name, '127.0.0.1', 16000);
        await until('the SYN in the plug', () => plugQlen(ns) >= 1);
        const r = synhold(['--netns', ns.name, 'release']);
        assert.equal(r.status, 0, r.stderr);
        assert.match(r.stdout, new RegExp(`released by the hold's watchdog \\(pid \\d+, holding for daemon pid ${daemonPid}\\)`));
        assert.equal((await c.result).error, null, 'the held client connected');
        assert.ok(isAlive(processId(daemonPid)), 'the daemon lives on after synhold release');
        await g1.open();
        // protect's summary comes once CMD has exited; then it must exit too (a deploy script waits on it).
        const summary = await until("protect's summary", () => /^synhold: held .*$/m.exec(p1.stderr())?.[0], 30_000);
        assert.match(summary, /released by synhold release\); command exited 0/);
        const exited = await until('protect to exit', () => p1.exited(), 10_000).then(
          () => true,
          () => false,
        );
        t.diagnostic(`${r.stdout.trim()}; protect: ${summary}; ${exited ? 'exited' : 'still running 10 s after its summary'}`);
        assert.ok(exited, 'protect printed its summary but had not exited 10 s later (the daemon, alive, keeps its connection open)');
        assert.equal((await p1.done).status, 0);
      } finally {
        await g1.close();
      }
    });
  });
});

test("daemon: kill -9 of the daemon during a hold, its watchdog releases within 50 ms (+ the lab's own release overhead); protect is told", async (t) => {
  await withProtected(async (ns) => {
    const cal = await calibrate(ns);
    await withDaemon(ns, 19475, async (daemonPid, daemonDied) => {
      const g = gate();
      try {
        const p = synholdAsync(['--netns', ns.name, '--json', 'protect', '--max-hold', '60s', '--', ...g.cmd]);
        await until('the hold', () => holding(ns));
        const c = startClient(ns.name, '127.0.0.1', 16000);
        await until('the SYN in the plug', () => plugQlen(ns) >= 1);
        const killedAt = Date.now();
        process.kill(daemonPid, 'SIGKILL');
        const res = await c.result;
        assert.equal(res.error, null);
        // The promise is 50 ms from the owner's death, and the watchdog can only see the death
        // once the kernel has torn the daemon down (11-87 ms after SIGKILL in the lab; from the
        // kill, CI's lab once measured 85 ms against a bound of 80): the clock starts at the
        // death, as withDaemon's witness saw it.
        const diedAt = await daemonDied();
        const ms = res.connectedAt! - diedAt;
        t.diagnostic(
          `kill -9 of the daemon: its files closed ${diedAt - killedAt} ms after the kill; held connect completed ${ms} ms after that (${res.connectedAt! - killedAt} ms after the kill); ` +
            `the lab's release overhead (no kill): ${cal.raw.join(', ')} ms; bound ${killBound(cal)} ms`,
        );
        assert.ok(diedAt >= killedAt - 5, `the witness saw the daemon's end ${killedAt - diedAt} ms before it was killed`);
        assert.ok(ms < killBound(cal), `released ${ms} ms after the daemon died (bound 50 ms + 3 x ${cal.max} ms, the lab's own release overhead)`);
        await g.open();
        const out = await p.done;
        assert.equal(out.status, 0, out.stderr);
        // protect learns it from the daemon's connection closing: the watchdog let go, the owner being gone.
        assert.match(out.stderr, /owner gone/);
        const j = JSON.parse(out.stdout) as { releaseCause: string; releasedBy: string };
        assert.equal(j.releaseCause, 'owner-gone');
        assert.equal(j.releasedBy, 'watchdog');
        assert.equal(status(ns).stats.lastHold?.reason, 'released by the watchdog (owner-gone)');
      } finally {
        await g.close();
      }
    });
  });
});
