/**
 * `synhold protect --stop-old SIGNAL` on the real kernel (nfqueue, a fresh namespace per test): CMD
 * starts a new server beside the old one, protect holds only around the old one's stop, which it
 * signals itself. The server is a small Python listener with SO_REUSEPORT (as HAProxy binds) that
 * closes its listener and exits on SIGUSR1; each instance writes its pid to a directory, so every
 * process the test starts is stopped by PID. Oracles: `ss -Htlnpe` (which sockets listen, and which
 * process holds them), /proc (which processes live), and `synhold --json status` (held or not).
 * HAProxy itself under load, 200 reloads, is the last test.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { halfOpen, PY_REUSEPORT_LISTEN } from '../helpers/tcp.js';
import { nstat, withNetns, type TestNetns } from '../helpers/netns.js';
import { synhold, synholdAsync } from '../helpers/cli.js';
import { alive, until } from '../helpers/wait.js';
import { describeResult, runExperimentIn } from '../helpers/reload-experiment.js';
import type { ProtectResult } from '../../src/protect/protect.js';
import { DRAIN_STALL_MS } from '../../src/protect/stop-old.js';

const PORT = 16120;

// Listens on 127.0.0.1:PORT with SO_REUSEPORT, writes DIR/PID, accepts through an epoll set (as
// HAProxy does) and closes; on SIGUSR1 writes DIR/PID.stop (time.monotonic()), closes its listeners
// and exits (HAProxy's soft stop, reduced to what the race is about). Any other signal keeps its
// default action (SIGWINCH: ignored). With V6_AFTER >= 0 it also listens on [::1]:PORT that many
// seconds after the IPv4 listener, writing DIR/PID.v6 (time.monotonic()) just after. Options after
// it: "fork" forks after listen(), parent and child both holding the listener (a master and its
// worker); "poll=S" puts the listeners in its epoll set S seconds after listen() (its start-up),
// writing DIR/PID.poll (time.monotonic()) then; "select" accepts through select(2), no epoll at all.
// Exits by itself after 60 s.
const SERVER = `
import os, select, signal, socket, sys, time
port, d, v6_after = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
opts = sys.argv[4:]
fork = "fork" in opts
use_select = "select" in opts
poll_after = float(([o[5:] for o in opts if o.startswith("poll=")] or ["0"])[0])
${PY_REUSEPORT_LISTEN}
socks = [listen(socket.AF_INET, "127.0.0.1")]
socks[0].setblocking(False)
def stop(sig, frame):
    open(os.path.join(d, "%d.stop" % os.getpid()), "w").write("%.6f" % time.monotonic())
    for s in socks:
        s.close()
    sys.exit(0)
signal.signal(signal.SIGUSR1, stop)
if fork:
    os.fork()
open(os.path.join(d, str(os.getpid())), "w").close()
v6_at = time.monotonic() + v6_after if v6_after >= 0 else None
poll_at = time.monotonic() + poll_after
ep = None
end = time.monotonic() + 60
while time.monotonic() < end:
    if v6_at is not None and time.monotonic() >= v6_at:
        socks.append(listen(socket.AF_INET6, "::1"))
        socks[-1].setblocking(False)
        if ep is not None:
            ep.register(socks[-1].fileno(), select.EPOLLIN)
        open(os.path.join(d, "%d.v6" % os.getpid()), "w").write("%.6f" % time.monotonic())
        v6_at = None
    if use_select:
        r, _, _ = select.select(socks, [], [], 0.01)
    elif ep is None:
        if time.monotonic() < poll_at:
            time.sleep(0.002)
            continue
        ep = select.epoll()
        for s in socks:
            ep.register(s.fileno(), select.EPOLLIN)
        open(os.path.join(d, "%d.poll" % os.getpid()), "w").write("%.6f" % time.monotonic())
        continue
    else:
        ready = {fd for fd, _ in ep.poll(0.01)}
        r = [s for s in socks if s.fileno() in ready]
    for s in r:
        try:
            c, _ = s.accept()
        except BlockingIOError:
            continue
        c.close()
`;

interface Fixture {
  ns: TestNetns;
  dir: string;
  script: string;
  /** Every server pid started so far (from DIR). */
  pids(): number[];
  /** CMD that starts a new server in the background and exits 0 once it listens (as `haproxy -D` does). */
  startCmd: string[];
  /** The same for a dual-stack server whose [::1] listener comes `v6AfterS` after its IPv4 one (CMD returns after the IPv4 one). */
  startDualCmd(v6AfterS: number): string[];
  /** The same with the server's options ("poll=S", "select"). */
  startWith(...opts: string[]): string[];
  /** Listeners on PORT: [inode, pid] per socket, from ss. */
  listeners(): { inode: number; pid: number }[];
  held(): boolean;
}

async function withServer(fn: (f: Fixture) => Promise<void>, o: { dualStack?: boolean; forked?: boolean } = {}): Promise<void> {
  await withNetns(async (ns) => {
    const dir = mkdtempSync(join(tmpdir(), 'synhold-stop-old-'));
    const script = join(dir, 'server.py');
    const pidDir = join(dir, 'pids');
    writeFileSync(script, SERVER);
    mkdirSync(pidDir);
    const pids = () =>
      readdirSync(pidDir)
        .filter((n) => /^\d+$/.test(n))
        .map(Number);
    // Returns once the new server listens (it writes its pid after listen()), as `haproxy -D` does; 5 s at most.
    const start = (v6AfterS: number, ...opts: string[]) => [
      'sh',
      '-c',
      `n=$(ls ${pidDir} | grep -c '^[0-9]*$'); python3 ${script} ${PORT} ${pidDir} ${v6AfterS} ${opts.join(' ')} </dev/null >/dev/null 2>&1 & ` +
        `i=0; until [ "$(ls ${pidDir} | grep -c '^[0-9]*$')" -gt "$n" ] || [ $i -ge 250 ]; do sleep 0.02; i=$((i+1)); done`,
    ];
    const f: Fixture = {
      ns,
      dir: pidDir,
      script,
      pids,
      startCmd: start(-1),
      startDualCmd: start,
      startWith: (...opts) => start(-1, ...opts),
      listeners: () =>
        ns
          .exec('ss', ['-Htlnpe', 'sport', '=', `:${PORT}`])
          .trim()
          .split('\n')
          .filter(Boolean)
          .map((line) => ({ inode: Number(/ino:(\d+)/.exec(line)?.[1]), pid: Number(/pid=(\d+)/.exec(line)?.[1]) })),
      held: () => (JSON.parse(synhold(['--netns', ns.name, '--json', 'status']).stdout) as { held: boolean }).held,
    };
    try {
      assert.equal(synhold(['--netns', ns.name, 'setup', '--port', String(PORT), '--backend', 'nfqueue', '--migrate-req', 'off']).status, 0);
      // The old server.
      const old = o.forked
        ? ['python3', script, String(PORT), pidDir, '-1', 'fork']
        : ['sh', '-c', `exec python3 ${script} ${PORT} ${pidDir} ${o.dualStack ? 0 : -1}`];
      spawn('ip', ['netns', 'exec', ns.name, ...old], { stdio: 'ignore', detached: true }).unref();
      await until('the old server listening', () => f.listeners().length === (o.dualStack ? 2 : 1) && pids().length === (o.forked ? 2 : 1));
      await fn(f);
    } finally {
      for (const pid of pids()) if (alive(pid)) process.kill(pid, 'SIGKILL');
      synhold(['--netns', ns.name, 'teardown']);
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

/** Connections to PORT mid-handshake, as `ss` lists them. */
const synRecv = (ns: TestNetns) =>
  ns
    .exec('ss', ['-Htn', 'state', 'syn-recv', 'sport', '=', `:${PORT}`])
    .trim()
    .split('\n')
    .filter(Boolean).length;

function protectJson(ns: TestNetns, args: string[], command: string[]): { status: number | null; r: ProtectResult; stderr: string } {
  const out = synhold(['--netns', ns.name, '--json', 'protect', ...args, '--', ...command]);
  return { status: out.status, r: JSON.parse(out.stdout) as ProtectResult, stderr: out.stderr };
}

test('--stop-old: the new server starts beside the old one, the old one is signalled under a short hold and is gone after', async () => {
  await withServer(async (f) => {
    const [old] = f.pids();
    const oldInode = f.listeners()[0]!.inode;
    const called = Date.now();
    const { status, r, stderr } = protectJson(f.ns, ['--stop-old', 'USR1'], f.startCmd);
    const returned = Date.now();
    assert.equal(status, 0, stderr);
    assert.equal(r.stopOld?.outcome, 'stopped');
    // The hold's wall-clock window (to place it beside other logs) is inside the call.
    const began = Date.parse(r.holdStartedAt ?? '');
    assert.ok(began >= called && began + r.holdMs! <= returned, `hold ${r.holdStartedAt} + ${r.holdMs} ms, call [${called}, ${returned}]`);
    assert.deepEqual(r.stopOld?.pids, [old]);
    // Set up with --migrate-req off: said, once, as a warning.
    assert.match(r.stopOld?.warning ?? '', /^net\.ipv4\.tcp_migrate_req is 0: /);
    assert.match(stderr, /^synhold: warning: net\.ipv4\.tcp_migrate_req is 0: /m);
    assert.equal(r.releaseCause, 'reload-done');
    assert.match(r.releaseReason ?? '', /replaced 1 old listener after SIGUSR1 to pid \d+/);
    // The order protect saw: the new listener before the hold (negative), then the signal, the old one gone, the release.
    const t = r.timeline!;
    assert.ok(t.newListenerMs! < 0, `new listener seen before the hold: ${JSON.stringify(t)}`);
    assert.ok(t.stopSentMs! >= 0 && t.stopSentMs! <= t.oldGoneMs! && t.oldGoneMs! <= t.releaseSentMs, JSON.stringify(t));
    assert.ok(r.stopOld!.unheldMs! > 0, 'the start-up was not held');
    assert.equal(r.stopOld?.handshakingAtSignal, 0);
    // The kernel's word: one listener, a new socket, held by the new process; the old process gone.
    await until('the old server gone', () => !alive(old!));
    const now = f.listeners();
    const newPid = f.pids().find((p) => p !== old);
    assert.equal(now.length, 1, JSON.stringify(now));
    assert.notEqual(now[0]!.inode, oldInode);
    assert.equal(now[0]!.pid, newPid);
    assert.equal(f.held(), false);
  });
});

/**
 * With tcp_migrate_req=`migrate` and four clients whose handshakes the server never sees end (their
 * bare ACKs dropped): protect --stop-old USR1 --settle-wait 600ms; `check` gets its result while
 * the four are still there.
 */
async function stopOldBesideHandshakes(f: Fixture, migrate: '0' | '1', check: (r: ProtectResult) => Promise<void>): Promise<void> {
  f.ns.exec('sysctl', ['-qw', `net.ipv4.tcp_migrate_req=${migrate}`]);
  const undo = await halfOpen(f.ns.name, '127.0.0.1', PORT, 4);
  try {
    assert.equal(synRecv(f.ns), 4);
    const { status, r, stderr } = protectJson(f.ns, ['--stop-old', 'USR1', '--settle-wait', '600ms'], f.startCmd);
    assert.equal(status, 0, stderr);
    assert.equal(r.stopOld?.outcome, 'stopped');
    await check(r);
    assert.equal(f.held(), false);
  } finally {
    undo();
  }
}

test('--stop-old, tcp_migrate_req=0: connections mid-handshake (SYN_RECV) keep the signal back until --settle-wait (nothing would move them), and are counted in the report', async () => {
  await withServer((f) =>
    stopOldBesideHandshakes(f, '0', async (r) => {
      assert.equal(r.stopOld?.handshakingAtSignal, 4);
      assert.equal(r.stopOld?.queuedAtSignal, 0);
      const drain = r.stopOld!.drainMs!;
      assert.ok(drain >= 600 && drain < 1200, `drained ${drain} ms`);
      assert.ok(r.timeline!.stopSentMs! >= 600, JSON.stringify(r.timeline));
    }),
  );
});

test('--stop-old, tcp_migrate_req=1: connections mid-handshake do not keep the signal back (not counted: the kernel moves them to the new listener), and are moved, not reset', async () => {
  await withServer(async (f) => {
    const before = nstat(f.ns, 'TcpExtTCPMigrateReqSuccess');
    await stopOldBesideHandshakes(f, '1', async (r) => {
      assert.equal(r.stopOld?.handshakingAtSignal, 0);
      assert.ok(r.stopOld!.drainMs! < DRAIN_STALL_MS, `drained ${r.stopOld!.drainMs} ms`);
      // Their SYN-ACK retransmits (their ACKs stay dropped) move them to the new listener: the
      // kernel's own count, and they are still there, mid-handshake, not reset.
      await until('the four requests migrated (nstat TcpExtTCPMigrateReqSuccess)', () => nstat(f.ns, 'TcpExtTCPMigrateReqSuccess') - before >= 4, 5000, 50);
      assert.equal(synRecv(f.ns), 4);
    });
  });
});

test('--stop-old, dual-stack: the old server is signalled only once the new one listens on both 127.0.0.1 and ::1', async () => {
  await withServer(
    async (f) => {
      const [old] = f.pids();
      // With migration on (as setup leaves it by default) there is nothing to warn of.
      f.ns.exec('sh', ['-c', 'echo 1 > /proc/sys/net/ipv4/tcp_migrate_req']);
      // CMD returns once the new IPv4 listener is up; its [::1] listener comes 0.5 s later.
      const { status, r, stderr } = protectJson(f.ns, ['--stop-old', 'USR1'], f.startDualCmd(0.5));
      assert.equal(status, 0, stderr);
      assert.equal(r.stopOld?.outcome, 'stopped');
      assert.equal(r.stopOld?.warning, undefined);
      assert.doesNotMatch(stderr, /warning/);
      await until('the old server gone', () => !alive(old!));
      const newPid = f.pids().find((p) => p !== old)!;
      // The oracle is the clock both Python processes share (CLOCK_MONOTONIC).
      const v6At = Number(readFileSync(join(f.dir, `${newPid}.v6`), 'utf8'));
      const stoppedAt = Number(readFileSync(join(f.dir, `${old}.stop`), 'utf8'));
      assert.ok(stoppedAt > v6At, `the old server got SIGUSR1 at ${stoppedAt}, before the new [::1] listener at ${v6At}`);
      assert.ok(r.stopOld!.unheldMs! >= 400, `the wait for [::1] was not held: ${r.stopOld!.unheldMs} ms`);
      assert.deepEqual(
        f.listeners().map((l) => l.pid),
        [newPid, newPid],
      );
    },
    { dualStack: true },
  );
});

test('--stop-old, the start guard: while the new server starts, every new connection goes to the old one; SIGUSR1 waits until the new one polls its listener', async () => {
  await withServer(async (f) => {
    const [old] = f.pids();
    f.ns.exec('sh', ['-c', 'echo 1 > /proc/sys/net/ipv4/tcp_migrate_req']);
    // The new server listens at once and reaches its event loop 0.6 s later: a start-up.
    const p = synholdAsync(['--netns', f.ns.name, '--json', 'protect', '--stop-old', 'USR1', '--', ...f.startWith('poll=0.6')]);
    await until('the new server listening', () => f.listeners().length === 2, 5000, 10);
    // Connections made during the new server's start-up: all accepted at once, by the old server.
    const took = f.ns.exec('python3', [
      '-c',
      `import socket, time\nw = []\nfor _ in range(30):\n    t = time.monotonic(); c = socket.create_connection(("127.0.0.1", ${PORT}), timeout=5); c.settimeout(5); c.recv(1); w.append(time.monotonic() - t)\nprint(max(w))`,
    ]);
    assert.ok(Number(took) < 0.2, `the slowest of 30 connections made while the new server started took ${took} s: one waited in the new, unpolled listener`);
    const out = await p.done;
    assert.equal(out.status, 0, out.stderr);
    const r = JSON.parse(out.stdout) as ProtectResult;
    assert.equal(r.stopOld?.outcome, 'stopped');
    assert.deepEqual(r.stopOld?.steer, { steered: [`ipv4 127.0.0.1 port ${PORT}`], toNew: [`ipv4 127.0.0.1 port ${PORT}`], notes: [] });
    assert.ok(r.stopOld!.unheldDrainMs! >= 0, 'the old queue drained before the hold, turned to the new server');
    assert.ok(r.stopOld!.pollWaitMs! >= 400, `waited ${r.stopOld!.pollWaitMs} ms for the new server to poll`);
    const newPid = f.pids().find((x) => x !== old)!;
    await until('the old server gone', () => !alive(old!));
    const polledAt = Number(readFileSync(join(f.dir, `${newPid}.poll`), 'utf8'));
    const stoppedAt = Number(readFileSync(join(f.dir, `${old}.stop`), 'utf8'));
    assert.ok(stoppedAt > polledAt, `SIGUSR1 at ${stoppedAt}, before the new server polled at ${polledAt}`);
    assert.equal(f.held(), false);
  });
});

test('--stop-old, the start guard: a new server without epoll is never seen polling: SIGUSR1 goes --settle-wait after its listener is up; --start-guard off signals at once', async () => {
  await withServer(async (f) => {
    const { status, r, stderr } = protectJson(f.ns, ['--stop-old', 'USR1', '--settle-wait', '500ms'], f.startWith('select'));
    assert.equal(status, 0, stderr);
    assert.equal(r.stopOld?.outcome, 'stopped');
    assert.ok(r.stopOld!.pollWaitMs! >= 500 && r.stopOld!.pollWaitMs! < 1500, `waited ${r.stopOld!.pollWaitMs} ms`);
    await until('one server left', () => f.pids().filter(alive).length === 1);

    const off = protectJson(f.ns, ['--stop-old', 'USR1', '--start-guard', 'off'], f.startWith('poll=2'));
    assert.equal(off.status, 0, off.stderr);
    assert.equal(off.r.stopOld?.steer, undefined);
    assert.equal(off.r.stopOld?.pollWaitMs, undefined);
    assert.ok(off.r.stopOld!.unheldMs! < 1500, `signalled before the new server polled: ${off.r.stopOld!.unheldMs} ms after CMD's start`);
  });
});

test("--stop-old: a failed CMD leaves the old server serving and holds nothing (its status is protect's)", async () => {
  await withServer(async (f) => {
    const [old] = f.pids();
    const before = f.listeners();
    const { status, r } = protectJson(f.ns, ['--stop-old', 'USR1'], ['sh', '-c', 'exit 3']);
    assert.equal(status, 3);
    assert.equal(r.stopOld?.outcome, 'command-failed');
    assert.equal(r.holdMs, undefined);
    assert.ok(alive(old!));
    assert.deepEqual(f.listeners(), before);
    assert.equal(f.held(), false);
    const stats = JSON.parse(synhold(['--netns', f.ns.name, '--json', 'status']).stdout) as { stats?: { holds?: number } };
    assert.equal(stats.stats?.holds ?? 0, 0, 'no hold was taken');
  });
});

test('--stop-old: CMD exits 0 but no new server listens: the old one is left serving, nothing held, exit 125', async () => {
  await withServer(async (f) => {
    const [old] = f.pids();
    const { status, r } = protectJson(f.ns, ['--stop-old', 'USR1', '--settle-wait', '300ms'], ['true']);
    assert.equal(status, 125);
    assert.equal(r.stopOld?.outcome, 'not-replaced');
    assert.match(r.stopOld?.left ?? '', /no new listener yet on ipv4 127\.0\.0\.1 port 16120 \d+ ms later \(--settle-wait\)/);
    assert.equal(r.holdMs, undefined);
    assert.ok(alive(old!));
    assert.equal(f.listeners().length, 1);
  });
});

test('--stop-old: an old server that ignores the signal is released --settle-wait after it, and said so', async () => {
  await withServer(async (f) => {
    const [old] = f.pids();
    const { status, r } = protectJson(f.ns, ['--stop-old', 'WINCH', '--settle-wait', '300ms'], f.startCmd);
    assert.equal(status, 0);
    assert.equal(r.releaseCause, 'command-exited');
    assert.match(r.releaseReason ?? '', /still listens \d+ ms after SIGWINCH \(--settle-wait\): not closing/);
    assert.ok(r.holdMs! >= 300 && r.holdMs! < 5000, `held ${r.holdMs} ms`);
    assert.ok(alive(old!), 'SIGWINCH does not stop it');
    assert.equal(f.listeners().length, 2, 'both listen');
    assert.equal(f.held(), false);
  });
});

test('--stop-old: a master and its worker holding the listener (nginx, HAProxy -W): refused before CMD runs, nothing signalled', async () => {
  await withServer(
    async (f) => {
      const before = f.pids();
      const marker = join(f.dir, '..', 'ran');
      const out = synhold(['--netns', f.ns.name, 'protect', '--stop-old', 'USR1', '--', 'touch', marker]);
      assert.equal(out.status, 125, out.stderr);
      assert.match(out.stderr, /is held by pid \d+ and its child \d+ \(a master and its workers\), which --stop-old would stop together/);
      assert.equal(existsSync(marker), false, 'CMD did not run');
      assert.ok(before.every(alive), 'nothing was signalled');
      assert.equal(f.held(), false);
    },
    { forked: true },
  );
});

test('--stop-old with no server before: CMD runs, nothing to stop, nothing held', async () => {
  await withServer(async (f) => {
    for (const p of f.pids()) process.kill(p, 'SIGKILL');
    await until('no listener', () => f.listeners().length === 0);
    const { status, r } = protectJson(f.ns, ['--stop-old', 'USR1'], f.startCmd);
    assert.equal(status, 0);
    assert.equal(r.stopOld?.outcome, 'nothing-to-stop');
    assert.equal(r.holdMs, undefined);
    await until('the new server listening', () => f.listeners().length === 1);
  });
});

test('--stop-old: bad input is one line, exit 125, and CMD never runs', async () => {
  await withServer(async (f) => {
    const marker = join(f.dir, '..', 'ran');
    for (const [args, want] of [
      [['--stop-old', 'CONT'], /--stop-old must name a signal that stops a server \(USR1 for HAProxy, QUIT for nginx\), not "CONT"/],
      [['--stop-old', 'NOSUCH'], /not "NOSUCH"/],
      [['--stop-old', 'USR1', '--release-on', 'exit'], /--stop-old releases when the old server's listeners close; --release-on does not go with it/],
    ] as const) {
      const out = synhold(['--netns', f.ns.name, 'protect', ...args, '--', 'touch', marker]);
      assert.equal(out.status, 125, out.stderr);
      assert.match(out.stderr, want);
      assert.equal(out.stderr.trim().split('\n').length, 1, out.stderr);
      assert.equal(existsSync(marker), false, 'CMD did not run');
    }
    assert.equal(f.pids().length, 1);
    assert.equal(f.held(), false);
  });
});

test('--stop-old: protect killed (SIGKILL) while holding around the stop: the watchdog releases within its bound', async () => {
  await withServer(async (f) => {
    // WINCH: the old server ignores it, so the hold lasts until --settle-wait (10 s) unless protect dies.
    const p = synholdAsync(['--netns', f.ns.name, 'protect', '--stop-old', 'WINCH', '--settle-wait', '10s', '--', ...f.startCmd]);
    await until('the hold around the stop', () => f.held(), 10_000, 20);
    const killedAt = Date.now();
    process.kill(p.pid, 'SIGKILL');
    await p.done;
    await until('released by the watchdog', () => !f.held(), 3_000, 10);
    assert.ok(Date.now() - killedAt < 3_000);
    // A new connection goes through (nothing left held): the new or the old server accepts it.
    f.ns.exec('python3', ['-c', `import socket; socket.create_connection(("127.0.0.1", ${PORT}), timeout=2).close()`]);
  });
});

test('HAProxy reloaded every 100 ms under load with --stop-old USR1 (no -sf): none lost over 200 reloads, each hold around the stop', async (t) => {
  await withNetns(async (ns) => {
    const r = runExperimentIn(ns.name, {
      protect: true,
      setupArgs: ['--backend', 'nfqueue', '--migrate-req', 'off'],
      protectArgs: ['--stop-old', 'USR1'],
      withoutSf: true,
      reloads: 200,
      intervalMs: 100,
      concurrency: 50,
    });
    t.diagnostic(`nfqueue, --stop-old USR1: ${describeResult(r)}`);
    assert.equal(r.reloads, 200);
    assert.equal(r.reloadFailures, 0);
    assert.equal(r.holds.length, 200, 'every reload was held and released');
    assert.deepEqual(
      r.holds.filter((h) => !/after SIGUSR1 to pid \d+$/.test(h.reason)),
      [],
      'every hold ended with the old listener closing after the signal',
    );
    assert.equal(r.failed, 0, `requests failed: ${JSON.stringify(r.details)}`);
    assert.ok(r.requests > 10_000, `only ${r.requests} requests`);
  });
});
