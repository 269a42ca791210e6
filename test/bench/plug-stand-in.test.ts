// The steady-state bench's stand-in for the plug backend's clsact topology, on this kernel (no
// sch_plug): tc's own dump shows synhold's u32 keys, and only SYNs to the protected port take the
// redirect, which still delivers them (the path works, counted by the IFB's pfifo). The prio stand-in
// needs sch_prio, which this kernel lacks: test/lab-guest/plug.test.ts compares both stand-ins with
// what `synhold setup --backend plug` builds, in the kernel lab.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { STAND_IN_IFB, standIn } from '../../bench/src/cost/plug-stand-in.js';
import { synMatchKeys } from '../../src/rtnl/tc/cls_u32.js';
import { withNetns, type TestNetns } from '../helpers/netns.js';

const PORT = 8001;
const hex8 = (n: number) => (n >>> 0).toString(16).padStart(8, '0');

/** The `match VAL/MASK at OFF` lines of each u32 filter in tc's text dump, per protocol. */
function tcMatches(ns: TestNetns, args: string[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  let proto = '';
  for (const line of ns.exec('tc', ['filter', 'show', ...args]).split('\n')) {
    const p = /^filter protocol (\S+) /.exec(line);
    if (p) proto = p[1]!;
    const m = /^\s+(match [0-9a-f]{8}\/[0-9a-f]{8} at \d+)/.exec(line);
    if (m) (out[proto] ??= []).push(m[1]!);
  }
  return out;
}

const expected = (family: 4 | 6) => synMatchKeys({ family, port: PORT }).map((k) => `match ${hex8(k.val)}/${hex8(k.mask)} at ${k.off}`);

/** One connection to the protected port on 127.0.0.1 and one byte across it; what arrived. */
function oneByteToPort(ns: TestNetns): string {
  const py = `import socket
srv = socket.socket(); srv.bind(("127.0.0.1", ${PORT})); srv.listen(1)
c = socket.create_connection(("127.0.0.1", ${PORT})); a, _ = srv.accept(); c.sendall(b"x"); print(a.recv(1).decode())`;
  return ns.exec('python3', ['-c', py]).trim();
}

function ifbPackets(ns: TestNetns): number {
  const q = (ns.tcJson(['-s', 'qdisc', 'show', 'dev', STAND_IN_IFB]) as { kind: string; packets?: number }[]).find((x) => x.kind === 'pfifo');
  return q?.packets ?? -1;
}

test("the clsact stand-in: synhold's SYN keys on lo's egress hook, and only those SYNs go through the IFB, still delivered", async () => {
  await withNetns(async (ns) => {
    const s = standIn('clsact', 'lo', PORT);
    for (const [cmd, ...args] of s.install) ns.exec(cmd!, args);
    try {
      assert.deepEqual(tcMatches(ns, ['dev', 'lo', 'egress']), { ip: expected(4), ipv6: expected(6) });
      // Three connections per family to the protected port, each with 5 round trips, and one to another port.
      const py = `
import socket
def run(fam, host, port, n):
    srv = socket.socket(fam); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind((host, port)); srv.listen(8)
    for _ in range(n):
        c = socket.create_connection((host, port)); a, _ = srv.accept()
        for _ in range(5):
            c.sendall(b"x"); a.recv(1); a.sendall(b"y"); c.recv(1)
        c.close(); a.close()
    srv.close()
run(socket.AF_INET, "127.0.0.1", ${PORT}, 3)
run(socket.AF_INET6, "::1", ${PORT}, 3)
run(socket.AF_INET, "127.0.0.1", ${PORT + 1}, 1)
print("ok")`;
      assert.equal(ifbPackets(ns), 0);
      assert.equal(ns.exec('python3', ['-c', py]).trim(), 'ok');
      // The six SYNs to the port, nothing else (no SYN-ACK, no data, not the other port's SYN).
      assert.equal(ifbPackets(ns), 6);
    } finally {
      for (const [cmd, ...args] of s.remove) ns.exec(cmd!, args);
    }
    // Removed: lo as bare (its noqueue root, no clsact), no IFB.
    assert.deepEqual(
      (ns.tcJson(['qdisc', 'show', 'dev', 'lo']) as { kind: string }[]).map((q) => q.kind),
      ['noqueue'],
    );
    assert.equal(
      (ns.ipJson(['link', 'show']) as { ifname: string }[]).some((l) => l.ifname === STAND_IN_IFB),
      false,
    );
  });
});

test('the clsact stand-in without its filters: the hook, the IFB and its queue, and no packet redirected', async () => {
  await withNetns(async (ns) => {
    const s = standIn('clsact-idle', 'lo', PORT);
    for (const [cmd, ...args] of s.install) ns.exec(cmd!, args);
    try {
      assert.ok((ns.tcJson(['qdisc', 'show', 'dev', 'lo']) as { kind: string }[]).some((q) => q.kind === 'clsact'));
      assert.equal(ns.exec('tc', ['filter', 'show', 'dev', 'lo', 'egress']).trim(), '');
      assert.equal(oneByteToPort(ns), 'x');
      assert.equal(ifbPackets(ns), 0);
    } finally {
      for (const [cmd, ...args] of s.remove) ns.exec(cmd!, args);
    }
  });
});

test("the default's stand-in between holds: the IFB and its queue; lo's qdiscs and filters bare's, no packet redirected", async () => {
  await withNetns(async (ns) => {
    const bare = JSON.stringify([ns.tcJson(['qdisc', 'show', 'dev', 'lo']), ns.tcJson(['filter', 'show', 'dev', 'lo'])]);
    const s = standIn('clsact-between-holds', 'lo', PORT);
    for (const [cmd, ...args] of s.install) ns.exec(cmd!, args);
    try {
      assert.equal(JSON.stringify([ns.tcJson(['qdisc', 'show', 'dev', 'lo']), ns.tcJson(['filter', 'show', 'dev', 'lo'])]), bare);
      assert.ok((ns.tcJson(['qdisc', 'show', 'dev', STAND_IN_IFB]) as { kind: string }[]).some((q) => q.kind === 'pfifo'));
      assert.equal(oneByteToPort(ns), 'x');
      assert.equal(ifbPackets(ns), 0);
    } finally {
      for (const [cmd, ...args] of s.remove) ns.exec(cmd!, args);
    }
    assert.equal(
      (ns.ipJson(['link', 'show']) as { ifname: string }[]).some((l) => l.ifname === STAND_IN_IFB),
      false,
    );
  });
});

test('both stand-ins carry the same matches, one filter per family, as synhold installs them', () => {
  for (const t of ['prio', 'clsact'] as const) {
    const filters = standIn(t, 'lo', PORT).install.filter((a) => a[1] === 'filter');
    assert.equal(filters.length, 2);
    assert.deepEqual(
      filters.map((f) => f[f.indexOf('protocol') + 1]),
      ['ip', 'ipv6'],
    );
  }
});
