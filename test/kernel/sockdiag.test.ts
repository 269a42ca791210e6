/**
 * TCP listeners read over NETLINK_SOCK_DIAG, each kernel test in a fresh
 * network namespace with real listeners (python3 processes, bounded in time,
 * killed by PID), checked against `ss -Hltne` (an independent oracle), plus
 * golden request bytes captured from ss itself.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface, type Interface } from 'node:readline';
import { withNetns, type TestNetns } from '../helpers/netns.js';
import { halfOpen } from '../helpers/tcp.js';
import { SynholdError } from '../../src/model/errors.js';
import { SocketError } from '../../src/netlink/errors.js';
import {
  AF_INET,
  ListenerWatcher,
  TCPF_LISTEN,
  encodeInetDiagRequest,
  formatIpv6,
  listListeners,
  reloadSettled,
  sportBytecode,
  type Listener,
} from '../../src/sockdiag/inet_diag.js';

const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

// ---------------------------------------------------------------------------
// Listener processes
// ---------------------------------------------------------------------------

interface SocketSpec {
  family: 'ipv4' | 'ipv6';
  host: string;
  /** 0 for an ephemeral port. */
  port?: number;
  backlog?: number;
  reuseport?: boolean;
  v6only?: boolean;
  /** SO_BINDTODEVICE */
  device?: string;
}

interface ServerSpec {
  listen: SocketSpec[];
  /** Client connections opened after listening (never accepted: they wait in the accept queue). */
  connect?: { family: 'ipv4' | 'ipv6'; host: string; port: number; count: number }[];
  /** Seconds before the process exits on its own. */
  lifetime?: number;
}

/**
 * One python3 process inside the namespace: binds and listens as told, prints
 * the bound ports as JSON, then obeys `close N` lines on stdin until EOF or
 * its lifetime ends.
 */
const SERVER_PY = `
import json, select, socket, sys, time
spec = json.loads(sys.argv[1])
socks = []
for s in spec['listen']:
    fam = socket.AF_INET6 if s['family'] == 'ipv6' else socket.AF_INET
    k = socket.socket(fam, socket.SOCK_STREAM)
    k.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if s.get('reuseport'):
        k.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if fam == socket.AF_INET6 and 'v6only' in s:
        k.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(s['v6only']))
    if 'device' in s:
        k.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, s['device'].encode())
    k.bind((s['host'], s.get('port', 0)))
    k.listen(s.get('backlog', 128))
    socks.append(k)
clients = []
for c in spec.get('connect', []):
    fam = socket.AF_INET6 if c['family'] == 'ipv6' else socket.AF_INET
    for _ in range(c['count']):
        k = socket.socket(fam, socket.SOCK_STREAM)
        k.connect((c['host'], c['port']))
        clients.append(k)
print(json.dumps([k.getsockname()[1] for k in socks]), flush=True)
deadline = time.time() + spec.get('lifetime', 60)
while True:
    left = deadline - time.time()
    if left <= 0 or not select.select([sys.stdin], [], [], left)[0]:
        break
    line = sys.stdin.readline()
    if not line:
        break
    cmd = line.split()
    if cmd and cmd[0] == 'close':
        socks[int(cmd[1])].close()
        print('closed', flush=True)
`;

interface Server {
  pid: number;
  ports: number[];
  /** Closes the Nth listening socket and waits until the process says it did. */
  close(index: number): Promise<void>;
  kill(): Promise<void>;
}

class Servers {
  private readonly procs: ChildProcess[] = [];
  constructor(private readonly ns: TestNetns) {}

  async start(spec: ServerSpec): Promise<Server> {
    // `ip netns exec` execs the command (no fork), so the child's PID is python's.
    const child = spawn('ip', ['netns', 'exec', this.ns.name, PYTHON, '-c', SERVER_PY, JSON.stringify(spec)], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.procs.push(child);
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const lines: Interface = createInterface({ input: child.stdout! });
    const it = lines[Symbol.asyncIterator]();
    const next = async (what: string): Promise<string> => {
      const r = await Promise.race([
        it.next(),
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`listener process: no "${what}" within 10 s; stderr: ${stderr}`)), 10_000).unref()),
      ]);
      if (r.done) throw new Error(`listener process exited before "${what}"; stderr: ${stderr}`);
      return r.value;
    };
    const ports = JSON.parse(await next('ports')) as number[];
    const pid = child.pid!;
    return {
      pid,
      ports,
      close: async (index) => {
        child.stdin!.write(`close ${index}\n`);
        assert.equal(await next('closed'), 'closed');
      },
      kill: () => killAndWait(child),
    };
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.procs.map(killAndWait));
  }
}

function killAndWait(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    process.kill(child.pid!, 'SIGKILL');
  });
}

async function withServers<T>(fn: (ns: TestNetns, servers: Servers) => Promise<T>): Promise<T> {
  return withNetns(async (ns) => {
    const servers = new Servers(ns);
    try {
      return await fn(ns, servers);
    } finally {
      await servers.stopAll();
    }
  });
}

// ---------------------------------------------------------------------------
// The oracle: ss -Hltne
// ---------------------------------------------------------------------------

interface SsListener {
  family: 'ipv4' | 'ipv6';
  address: string;
  port: number;
  queued: number;
  max: number;
  inode: number;
  cookie: string;
  v6only?: boolean;
}

/** `ss -Hltne -4` and `-6` inside the namespace, parsed. ss prints `*` for a dual-stack IPv6 wildcard. */
function ssListeners(ns: TestNetns): SsListener[] {
  const out: SsListener[] = [];
  for (const family of ['ipv4', 'ipv6'] as const) {
    const text = ns.exec('ss', ['-Hltne', family === 'ipv4' ? '-4' : '-6']);
    for (const line of text.split('\n').filter((l) => l.trim())) {
      const [state, recvq, sendq, local, , ...extra] = line.trim().split(/\s+/);
      assert.equal(state, 'LISTEN', line);
      const m = /^(?:\[(.+)\]|(.+?))(?:%\S+)?:(\d+)$/.exec(local!);
      assert.ok(m, `cannot parse local address in: ${line}`);
      const addr = m[1] ?? m[2]!;
      const kv = new Map(extra.filter((e) => e.includes(':')).map((e) => [e.slice(0, e.indexOf(':')), e.slice(e.indexOf(':') + 1)]));
      const l: SsListener = {
        family,
        address: addr === '*' ? (family === 'ipv6' ? '::' : '0.0.0.0') : addr,
        port: Number(m[3]),
        queued: Number(recvq),
        max: Number(sendq),
        inode: Number(kv.get('ino')),
        cookie: kv.get('sk')!,
      };
      if (kv.has('v6only')) l.v6only = kv.get('v6only') === '1';
      out.push(l);
    }
  }
  return out;
}

/** Our listeners in the oracle's shape, sorted the same way. */
function asSs(ls: Listener[]): SsListener[] {
  return sortSs(
    ls.map((l) => {
      const s: SsListener = {
        family: l.family,
        address: l.address,
        port: l.port,
        queued: l.backlog.queued,
        max: l.backlog.max,
        inode: l.inode,
        cookie: l.cookie,
      };
      if (l.v6only !== undefined) s.v6only = l.v6only;
      return s;
    }),
  );
}

function sortSs(ls: SsListener[]): SsListener[] {
  return [...ls].sort((a, b) => a.port - b.port || a.family.localeCompare(b.family) || a.address.localeCompare(b.address) || a.inode - b.inode);
}

/** The oracle's listeners on these ports. */
function ssOn(ns: TestNetns, ports: number[]): SsListener[] {
  return sortSs(ssListeners(ns).filter((l) => ports.includes(l.port)));
}

async function until(what: string, check: () => Promise<boolean>, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

// ---------------------------------------------------------------------------
// Codec: golden bytes from ss
// ---------------------------------------------------------------------------

test('request bytes equal what ss sends', () => {
  // Captured with: strace -x -s 2048 -e trace=sendmsg -e write=3 ss -Htn state listening '( sport = :80 or sport = :443 )'
  // (iproute2 6.1.0): the AF_INET message's payload after its 16-byte nlmsghdr (type 20, flags REQUEST|DUMP).
  const golden = Buffer.from(
    '02060000' +
      '00040000' +
      '00'.repeat(48) + // inet_diag_req_v2: AF_INET, IPPROTO_TCP, states 1<<TCP_LISTEN, zero sockid
      '28000100' + // nlattr: len 40, INET_DIAG_REQ_BYTECODE
      '07101400' +
      '00000000' +
      '50000000' +
      '00000000' + // S_COND yes 16 no 20, hostcond AF_UNSPEC/0 port 80, addr 0
      '01041400' + // JMP yes 4 no 20
      '07101400' +
      '00000000' +
      'bb010000' +
      '00000000', // S_COND port 443
    'hex',
  );
  assert.equal(encodeInetDiagRequest({ family: AF_INET, states: TCPF_LISTEN, sports: [80, 443] }).toString('hex'), golden.toString('hex'));

  // Same capture method: ss -Hltn '( sport = :80 or sport = :443 or sport = :8080 )', the bytecode alone.
  const three = '07101400000000005000000000000000' + '01041400' + '0710140000000000bb01000000000000' + '01041400' + '0710140000000000901f000000000000';
  assert.equal(sportBytecode([80, 443, 8080]).toString('hex'), three);
});

test('IPv6 addresses print as inet_ntop prints them', () => {
  const b = (hex: string) => Buffer.from(hex.replace(/ /g, ''), 'hex');
  assert.equal(formatIpv6(b('0000 0000 0000 0000 0000 0000 0000 0000')), '::');
  assert.equal(formatIpv6(b('0000 0000 0000 0000 0000 0000 0000 0001')), '::1');
  assert.equal(formatIpv6(b('fe80 0000 0000 0000 0202 b3ff fe1e 8329')), 'fe80::202:b3ff:fe1e:8329');
  assert.equal(formatIpv6(b('2001 0db8 0000 0001 0000 0000 0000 0001')), '2001:db8:0:1::1'); // longest run wins
  assert.equal(formatIpv6(b('2001 0db8 0000 0000 0001 0000 0000 0001')), '2001:db8::1:0:0:1'); // first of equal runs
  assert.equal(formatIpv6(b('2001 0db8 0000 0001 0001 0001 0001 0001')), '2001:db8:0:1:1:1:1:1'); // one zero word stays
  assert.equal(formatIpv6(b('0000 0000 0000 0000 0000 ffff 7f00 0001')), '::ffff:127.0.0.1');
  assert.equal(formatIpv6(b('0001 0000 0000 0000 0000 0000 0000 0000')), '1::');
});

test('invalid ports are refused before asking the kernel', async () => {
  for (const bad of [0, 65536, -1, 1.5, Number.NaN]) {
    await assert.rejects(listListeners({ ports: [bad] }), (e: unknown) => e instanceof SynholdError && e.code === 'ERR_BAD_PORT');
  }
});

// ---------------------------------------------------------------------------
// reloadSettled, pure
// ---------------------------------------------------------------------------

function fake(port: number, cookie: string, family: 'ipv4' | 'ipv6' = 'ipv4'): Listener {
  return {
    family,
    address: family === 'ipv4' ? '0.0.0.0' : '::',
    port,
    inode: parseInt(cookie, 16),
    uid: 0,
    cookie,
    backlog: { queued: 0, max: 128 },
    ifindex: 0,
  };
}

test('reloadSettled: the rule and its edge cases', () => {
  const a = fake(80, 'a1');
  const a6 = fake(80, 'a2', 'ipv6');
  const b = fake(80, 'b1');
  // Overlap: new up, old still open.
  let r = reloadSettled([a], [a, b], [80]);
  assert.equal(r.settled, false);
  assert.match(r.reason, /port 80: new 0\.0\.0\.0:80 sk:b1 up, old 0\.0\.0\.0:80 sk:a1 still open/);
  assert.deepEqual(r.waiting, [80]);
  // Replaced.
  r = reloadSettled([a], [b], [80]);
  assert.deepEqual(r, { settled: true, reason: 'port 80: 0.0.0.0:80 sk:b1 replaced 1 old listener', waiting: [] });
  // Gap: old gone, nothing new.
  r = reloadSettled([a], [], [80]);
  assert.equal(r.settled, false);
  assert.match(r.reason, /old listener gone, no new listener yet/);
  // fd hand-over: the same socket forever.
  r = reloadSettled([a], [a], [80]);
  assert.equal(r.settled, false);
  assert.match(r.reason, /same sockets as before.*haproxy -x/);
  // Per port, not per family: one new IPv4 listener replaces IPv4 and IPv6 old ones.
  assert.equal(reloadSettled([a, a6], [b], [80]).settled, true);
  // One of two old ones still open.
  assert.match(reloadSettled([a, a6], [a6], [80]).reason, /1 of 2 old still open \(\[::\]:80 sk:a2\)/);
  // A port with no listener before settles when one appears, and only then.
  assert.equal(reloadSettled([a], [b], [80, 443]).settled, false);
  assert.deepEqual(reloadSettled([a], [b], [80, 443]).waiting, [443]);
  assert.equal(reloadSettled([a], [b, fake(443, 'c1')], [80, 443]).settled, true);
  // Without `ports`, the ports seen in before and now.
  assert.equal(reloadSettled([], [fake(443, 'c1')]).settled, true);
  // Nothing protected: never settled.
  assert.deepEqual(reloadSettled([], [], []), { settled: false, reason: 'no protected port', waiting: [] });
  // Listeners on other ports play no part.
  assert.equal(reloadSettled([a, fake(22, 'd1')], [b, fake(22, 'd1')], [80]).settled, true);
});

// ---------------------------------------------------------------------------
// Kernel
// ---------------------------------------------------------------------------

test('IPv4 and IPv6 listeners agree with ss -Hltne: address, port, inode, cookie, backlog, v6only', async () => {
  await withServers(async (ns, servers) => {
    const s = await servers.start({
      listen: [
        { family: 'ipv4', host: '127.0.0.1', backlog: 7 },
        { family: 'ipv4', host: '0.0.0.0', backlog: 50 },
        { family: 'ipv6', host: '::1', v6only: true },
        { family: 'ipv6', host: '::', v6only: false },
        { family: 'ipv6', host: '::', v6only: true },
        { family: 'ipv6', host: '::ffff:127.0.0.1', v6only: false },
        { family: 'ipv4', host: '127.0.0.1', device: 'lo' },
        { family: 'ipv4', host: '127.0.0.1' }, // a port we do not ask for
      ],
    });
    const [p1, p2, p3, p4, p5, p6, p7, other] = s.ports as [number, number, number, number, number, number, number, number];
    // Two clients wait in the first listener's accept queue (the process never accepts).
    await servers.start({ listen: [], connect: [{ family: 'ipv4', host: '127.0.0.1', port: p1, count: 2 }] });
    const ports = [p1, p2, p3, p4, p5, p6, p7];

    const w = ListenerWatcher.open({ netns: ns.name });
    try {
      await until('two connections queued', async () => (await w.list([p1]))[0]?.backlog.queued === 2);
      const mine = await w.list(ports);
      assert.equal(mine.length, 7, JSON.stringify(mine));
      assert.ok(!mine.some((l) => l.port === other), 'unrequested port filtered out in the kernel');
      assert.deepEqual(asSs(mine), ssOn(ns, ports));

      const byPort = new Map(mine.map((l) => [l.port, l]));
      assert.deepEqual(byPort.get(p1)!.backlog, { queued: 2, max: 7 });
      assert.equal(byPort.get(p2)!.backlog.max, 50);
      assert.equal(byPort.get(p3)!.address, '::1');
      assert.equal(byPort.get(p3)!.v6only, true);
      assert.equal(byPort.get(p4)!.v6only, false);
      assert.equal(byPort.get(p6)!.address, '::ffff:127.0.0.1');
      assert.equal(byPort.get(p7)!.ifindex, 1, 'bound to lo (ss prints 127.0.0.1%lo)');
      assert.equal(byPort.get(p1)!.ifindex, 0);
      assert.equal(byPort.get(p1)!.uid, 0);
      assert.equal(byPort.get(p1)!.v6only, undefined, 'IPv4 listeners carry no v6only');
      assert.equal(new Set(mine.map((l) => l.cookie)).size, 7);

      // The one-shot function and the family filter.
      assert.deepEqual(asSs(await listListeners({ ports, netns: ns.name })), asSs(mine));
      const v6 = await listListeners({ ports, netns: ns.name, families: ['ipv6'] });
      assert.deepEqual(v6.map((l) => l.port).sort(), [p3, p4, p5, p6].sort());
      // listAll sees everything ss sees.
      assert.deepEqual(asSs(await w.listAll()), sortSs(ssListeners(ns)));
      // A port nobody listens on, and an empty list.
      assert.deepEqual(await w.list([1]), []);
      assert.deepEqual(await w.list([]), []);
    } finally {
      w.close();
    }
  });
});

test('a long port list is accepted by the kernel bytecode audit', async () => {
  await withServers(async (ns, servers) => {
    const s = await servers.start({ listen: Array.from({ length: 3 }, () => ({ family: 'ipv4' as const, host: '127.0.0.1' })) });
    const ports = [...Array.from({ length: 200 }, (_, i) => 1000 + i), ...s.ports];
    const mine = await listListeners({ ports, netns: ns.name });
    assert.deepEqual(mine.map((l) => l.port).sort(), [...s.ports].sort());
  });
});

test('SO_REUSEPORT: two listeners on one port are two entries; closing one removes it', async () => {
  await withServers(async (ns, servers) => {
    const a = await servers.start({ listen: [{ family: 'ipv4', host: '127.0.0.1', reuseport: true }] });
    const port = a.ports[0]!;
    const b = await servers.start({ listen: [{ family: 'ipv4', host: '127.0.0.1', port, reuseport: true }] });
    assert.equal(b.ports[0], port);
    const w = ListenerWatcher.open({ netns: ns.name });
    try {
      const two = await w.list([port]);
      assert.equal(two.length, 2);
      assert.notEqual(two[0]!.cookie, two[1]!.cookie);
      assert.notEqual(two[0]!.inode, two[1]!.inode);
      assert.deepEqual(asSs(two), ssOn(ns, [port]));

      const beforeClose = asSs(two);
      await a.close(0);
      const one = await w.list([port]);
      assert.equal(one.length, 1);
      assert.deepEqual(asSs(one), ssOn(ns, [port]));
      // The survivor is B's socket, unchanged.
      assert.ok(beforeClose.some((l) => l.cookie === one[0]!.cookie));
    } finally {
      w.close();
    }
  });
});

test('handshaking(): connections mid-handshake (SYN_RECV) on the ports, both families, as ss state syn-recv counts them', async () => {
  await withServers(async (ns, servers) => {
    const a = await servers.start({ listen: [{ family: 'ipv4', host: '127.0.0.1' }] });
    const port = a.ports[0]!;
    await servers.start({ listen: [{ family: 'ipv6', host: '::1', port, v6only: true }] });
    const other = (await servers.start({ listen: [{ family: 'ipv4', host: '127.0.0.1' }] })).ports[0]!;
    const w = ListenerWatcher.open({ netns: ns.name });
    const ssSynRecv = (p: number) =>
      ns
        .exec('ss', ['-Htn', 'state', 'syn-recv', 'sport', '=', `:${p}`])
        .trim()
        .split('\n')
        .filter(Boolean).length;
    try {
      assert.equal(await w.handshaking([port]), 0);
      const undo4 = await halfOpen(ns.name, '127.0.0.1', port, 3);
      try {
        const undo6 = await halfOpen(ns.name, '::1', port, 2);
        try {
          assert.equal(ssSynRecv(port), 5);
          assert.equal(await w.handshaking([port]), 5);
          assert.equal(await w.handshaking([other]), 0);
          assert.equal(await w.handshaking([other, port]), 5);
          // Listeners are still what list() returns; the handshakes are in no accept queue.
          assert.deepEqual(
            (await w.list([port])).map((l) => l.backlog.queued),
            [0, 0],
          );
        } finally {
          undo6();
        }
      } finally {
        undo4();
      }
      // A completed connection (its ACK no longer dropped) is not mid-handshake.
      const done = await servers.start({ listen: [], connect: [{ family: 'ipv4', host: '127.0.0.1', port, count: 1 }] });
      assert.ok(done.pid > 0);
      assert.equal(await w.handshaking([port]), ssSynRecv(port));
    } finally {
      w.close();
    }
  });
});

test('reloadSettled on a real sequence: A, then A+B (SO_REUSEPORT), then B only', async () => {
  await withServers(async (ns, servers) => {
    // A owns port P; port Q has no listener before the "reload".
    const a = await servers.start({ listen: [{ family: 'ipv4', host: '0.0.0.0', reuseport: true }] });
    const p = a.ports[0]!;
    const spare = await servers.start({ listen: [{ family: 'ipv4', host: '127.0.0.1' }] });
    const q = spare.ports[0]!;
    await spare.kill(); // frees Q, which is now known to be bindable
    const ports = [p, q];

    const w = ListenerWatcher.open({ netns: ns.name });
    try {
      const before = await w.list(ports);
      assert.equal(before.length, 1);
      let r = reloadSettled(before, before, ports);
      assert.equal(r.settled, false);
      assert.deepEqual(
        r.waiting,
        [p, q].sort((x, y) => x - y),
      );

      // B starts: both listen on P (SO_REUSEPORT), B also on Q.
      const b = await servers.start({
        listen: [
          { family: 'ipv4', host: '0.0.0.0', port: p, reuseport: true },
          { family: 'ipv4', host: '0.0.0.0', port: q },
        ],
      });
      const both = await w.list(ports);
      assert.equal(both.length, 3);
      assert.deepEqual(asSs(both), ssOn(ns, ports));
      r = reloadSettled(before, both, ports);
      assert.equal(r.settled, false, r.reason);
      assert.deepEqual(r.waiting, [p]);
      assert.match(r.reason, new RegExp(`port ${p}: new .* up, old 0\\.0\\.0\\.0:${p} sk:${before[0]!.cookie} still open`));
      assert.match(r.reason, new RegExp(`port ${q}: listener appeared`));

      // A exits: only B remains.
      await a.kill();
      const after = await w.list(ports);
      assert.deepEqual(asSs(after), ssOn(ns, ports));
      r = reloadSettled(before, after, ports);
      assert.equal(r.settled, true, r.reason);
      assert.deepEqual(r.waiting, []);

      // B exits too: a gap, not settled.
      await b.kill();
      r = reloadSettled(before, await w.list(ports), ports);
      assert.equal(r.settled, false);
      assert.match(r.reason, /old listener gone, no new listener yet/);
    } finally {
      w.close();
    }
  });
});

test('a missing namespace fails with a hint', () => {
  assert.throws(
    () => ListenerWatcher.open({ netns: 'synhold-no-such-netns' }),
    (e: unknown) => e instanceof SocketError && /no network namespace at \/run\/netns\/synhold-no-such-netns/.test(e.message),
  );
});

// ---------------------------------------------------------------------------
// Cost of one poll
// ---------------------------------------------------------------------------

function stats(us: number[]): string {
  const s = [...us].sort((x, y) => x - y);
  const q = (f: number) => s[Math.min(s.length - 1, Math.floor(f * s.length))]!.toFixed(1);
  const mean = s.reduce((x, y) => x + y, 0) / s.length;
  return `mean ${mean.toFixed(1)} us, p50 ${q(0.5)}, p99 ${q(0.99)}, max ${s[s.length - 1]!.toFixed(1)} (n=${s.length})`;
}

async function timeIt(n: number, fn: () => Promise<unknown>): Promise<number[]> {
  for (let i = 0; i < 200; i++) await fn(); // warm up the JIT and the kernel's caches
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    out.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  return out;
}

test('cost of one list() with a few hundred sockets present (reported, not asserted)', async (t: TestContext) => {
  await withServers(async (ns, servers) => {
    // 300 listeners on other ports, 1 protected listener with 2 SO_REUSEPORT sockets, and 100 connections
    // (200 established sockets) in the namespace.
    const others = await servers.start({
      listen: Array.from({ length: 300 }, () => ({ family: 'ipv4' as const, host: '127.0.0.1' })),
      lifetime: 120,
    });
    const a = await servers.start({ listen: [{ family: 'ipv4', host: '0.0.0.0', reuseport: true, backlog: 200 }], lifetime: 120 });
    const port = a.ports[0]!;
    await servers.start({ listen: [{ family: 'ipv4', host: '0.0.0.0', port, reuseport: true, backlog: 200 }], lifetime: 120 });
    await servers.start({ listen: [], connect: [{ family: 'ipv4', host: '127.0.0.1', port: others.ports[0]!, count: 100 }], lifetime: 120 });
    const total = ns
      .exec('ss', ['-Htan'])
      .split('\n')
      .filter((l) => l.trim()).length;
    t.diagnostic(`sockets in the namespace (ss -Htan): ${total}`);
    assert.ok(total >= 500, `expected a few hundred sockets, ss shows ${total}`);

    const w = ListenerWatcher.open({ netns: ns.name });
    try {
      assert.equal((await w.list([port])).length, 2);
      const n = 5000;
      t.diagnostic(`ListenerWatcher.list([port]), both families, kernel-filtered: ${stats(await timeIt(n, () => w.list([port])))}`);
      const w4 = ListenerWatcher.open({ netns: ns.name, families: ['ipv4'] });
      try {
        t.diagnostic(`ListenerWatcher.list([port]), ipv4 only: ${stats(await timeIt(n, () => w4.list([port])))}`);
      } finally {
        w4.close();
      }
      t.diagnostic(
        `ListenerWatcher.listAll() then filter in userspace (302 listeners): ${stats(await timeIt(1000, async () => (await w.listAll()).filter((l) => l.port === port)))}`,
      );
      t.diagnostic(
        `listListeners() (opens and closes a socket each call): ${stats(await timeIt(1000, () => listListeners({ ports: [port], netns: ns.name })))}`,
      );
    } finally {
      w.close();
    }
  });
});
