/**
 * --stop-old's start guard on the real kernel (src/protect/steer.ts), each test in a fresh namespace:
 *   - the steer: a program on a SO_REUSEPORT group, attached through another process's fd, sends
 *     every new connection to the group's oldest socket, and its detach restores the kernel's hash;
 *   - polled: a listener counts as served once its process has it in an epoll set.
 * The servers are Python listeners with SO_REUSEPORT (as HAProxy binds); the oracle is what each
 * server itself accepted (one "accepted" line per connection on its stdout), and `ss` for the sockets.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { withNetns, type TestNetns } from '../helpers/netns.js';
import { PY_REUSEPORT_LISTEN } from '../helpers/tcp.js';
import { until } from '../helpers/wait.js';
import { ListenerWatcher, type Listener } from '../../src/sockdiag/inet_diag.js';
import { ReloadSteer, PollingWatch, epollTargets } from '../../src/protect/steer.js';

const PORT = 16130;

// Listens on 127.0.0.1:PORT (SO_REUSEPORT), prints "listening"; EPOLL_AFTER seconds later (never
// if < 0) registers the listener in an epoll set and from then on accepts through it, printing
// "accepted" for each connection. Before that (or without epoll) it accepts nothing. Exits after 30 s.
const SERVER = `
import select, socket, sys, time
port, epoll_after = int(sys.argv[1]), float(sys.argv[2])
${PY_REUSEPORT_LISTEN}
s = listen(socket.AF_INET, "127.0.0.1")
s.setblocking(False)
print("listening", flush=True)
end = time.monotonic() + 30
ep = None
at = time.monotonic() + epoll_after if epoll_after >= 0 else None
while time.monotonic() < end:
    if ep is None:
        if at is not None and time.monotonic() >= at:
            ep = select.epoll()
            ep.register(s.fileno(), select.EPOLLIN)
        else:
            time.sleep(0.005)
            continue
    for _ in ep.poll(0.01):
        try:
            c, _ = s.accept()
        except BlockingIOError:
            continue
        c.close()
        print("accepted", flush=True)
`;

interface Server {
  child: ChildProcess;
  pid: number;
  accepted(): number;
}

async function startServer(ns: TestNetns, epollAfterS: number): Promise<Server> {
  const child = spawn('ip', ['netns', 'exec', ns.name, 'python3', '-c', SERVER, String(PORT), String(epollAfterS)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let n = 0;
  let listening!: () => void;
  const up = new Promise<void>((r) => (listening = r));
  createInterface({ input: child.stdout! }).on('line', (l) => (l === 'listening' ? listening() : l === 'accepted' ? n++ : undefined));
  await up;
  // ip netns exec execs python3: the child's pid is the server's.
  return { child, pid: child.pid!, accepted: () => n };
}

/** A fresh namespace, and `start` for servers in it, each killed (by PID) at the end. */
async function withServers(fn: (ns: TestNetns, start: (epollAfterS: number) => Promise<Server>) => Promise<void>): Promise<void> {
  await withNetns(async (ns) => {
    const servers: Server[] = [];
    try {
      await fn(ns, async (epollAfterS) => {
        const s = await startServer(ns, epollAfterS);
        servers.push(s);
        return s;
      });
    } finally {
      for (const s of servers) s.child.kill('SIGKILL');
    }
  });
}

/** `n` connections to the port, one after the other, from inside the namespace (each closed at once). */
function connectMany(ns: TestNetns, n: number): void {
  ns.exec('python3', ['-c', `import socket\nfor _ in range(${n}):\n    socket.create_connection(("127.0.0.1", ${PORT}), timeout=5).close()`]);
}

async function listeners(ns: TestNetns): Promise<Listener[]> {
  const w = ListenerWatcher.open({ netns: ns.name });
  try {
    return await w.list([PORT]);
  } finally {
    w.close();
  }
}

test("the steer sends every new connection to the group's oldest socket (the old server, still accepting), and its detach gives the kernel's hash back", async () => {
  await withServers(async (ns, start) => {
    const old = await start(0);
    const before = await listeners(ns);
    assert.equal(before.length, 1);
    const steer = ReloadSteer.attach(before, [old.pid]);
    assert.deepEqual(steer.report, { steered: [`ipv4 127.0.0.1 port ${PORT}`], toNew: [], notes: [] });
    const fresh = await start(0);
    assert.equal((await listeners(ns)).length, 2, 'both listen (ss: two sockets on the port)');

    connectMany(ns, 40);
    await until('the old server to accept all 40', () => old.accepted() === 40, 3000);
    await sleep(100);
    assert.equal(fresh.accepted(), 0, 'none went to the new listener while steered');

    // Turned: every new connection to the new socket, the old one only drains.
    assert.equal(steer.toNew(await listeners(ns)), true);
    assert.deepEqual(steer.report.toNew, [`ipv4 127.0.0.1 port ${PORT}`]);
    connectMany(ns, 40);
    await until('the new server to accept all 40', () => fresh.accepted() === 40, 3000);
    await sleep(100);
    assert.equal(old.accepted(), 40, 'none more went to the old listener once turned');

    steer.detach(await listeners(ns));
    assert.deepEqual(steer.report.notes, [], 'detached through a socket of the group');
    connectMany(ns, 40);
    await until('all 40 accepted', () => old.accepted() + fresh.accepted() === 120, 3000);
    // Hashed again: 40 connections all landing on one of two listeners would be a 2 in 2^40 chance.
    assert.ok(fresh.accepted() > 40 && old.accepted() > 40, `hashed across both after the detach: old ${old.accepted() - 40}, new ${fresh.accepted() - 40}`);
  });
});

test('the steer follows the group: once the old listener closes, the new one takes everything, turned or not; a group of several sockets is neither steered nor turned', async () => {
  await withServers(async (ns, start) => {
    const old = await start(0);
    const steer = ReloadSteer.attach(await listeners(ns), [old.pid]);
    const fresh = await start(0);
    assert.equal(steer.toNew(await listeners(ns)), true);
    old.child.kill('SIGKILL');
    await until('the old listener gone', async () => (await listeners(ns)).length === 1);
    connectMany(ns, 20);
    await until('the new server to accept all 20', () => fresh.accepted() === 20, 3000);
    steer.detach(await listeners(ns));
    assert.deepEqual(steer.report.notes, []);

    // Two sockets in the group before: a server balancing over them on purpose, left alone.
    const third = await start(0);
    const two = await listeners(ns);
    const s2 = ReloadSteer.attach(two, [fresh.pid, third.pid]);
    assert.equal(s2.active, false);
    assert.deepEqual(s2.report.steered, []);
    assert.match(s2.report.notes[0]!, /not steered, 2 listeners share it/);

    // Steered, then a third socket joins: not turned (which one is new is not known), still on the oldest.
    const s3 = ReloadSteer.attach([two[0]!], [fresh.pid, third.pid]);
    assert.equal(s3.active, true);
    await start(0); // a third socket joins the steered group
    assert.equal(s3.toNew(await listeners(ns)), false);
    assert.match(s3.report.notes.at(-1)!, /not turned to the new socket, the group is 3 sockets \(1 old\)/);
    s3.detach(await listeners(ns));
  });
});

test('polled: a listener counts once its process has it in an epoll set (fdinfo), not while it only listens; a server that never uses epoll is never seen polling', async () => {
  await withServers(async (ns, start) => {
    await start(0); // the old server
    const before = await listeners(ns);
    const watch = new PollingWatch(before);
    assert.equal(watch.polled(before), false, 'no new listener: nothing to be polled');

    const late = await start(0.8);
    const now = await listeners(ns);
    const fresh = now.find((l) => l.inode !== before[0]!.inode)!;
    assert.equal(watch.polled(now), false, 'listening, not yet in an epoll set');
    assert.equal(epollTargets(late.pid).has(fresh.inode), false);
    await until('the new server polling its listener', () => watch.polled(now), 3000);
    assert.ok(epollTargets(late.pid).has(fresh.inode), "its epoll set's fdinfo names the listener's inode");

    // A server without epoll (select, poll, or not accepting at all).
    late.child.kill('SIGKILL');
    await until('its listener gone', async () => (await listeners(ns)).length === 1);
    const never = await start(-1);
    const now2 = await listeners(ns);
    const w2 = new PollingWatch(before);
    await sleep(200);
    assert.equal(w2.polled(now2), false);
    assert.equal(epollTargets(never.pid).size, 0);
  });
});
