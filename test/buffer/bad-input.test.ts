/**
 * `synhold buffer` given bad input: one clear line on stderr, exit 2 (3 with no
 * buffer to talk to, 4 when the queue is taken), nothing on stdout, and the
 * kernel exactly as it was, read with independent oracles (nft -j list ruleset,
 * iptables-save, ip6tables-save, /proc/net/netfilter/nfnetlink_queue, ip -j link,
 * tc -j qdisc), and no
 * state directory left behind.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { kernelHas, withNetns, type TestNetns } from '../helpers/netns.js';
import { synhold } from '../helpers/cli.js';
import { BufferPaths } from '../../src/buffer/paths.js';
import { netfilterSnapshot, procQueues, startOwner } from './peers.js';

function kernelState(ns: TestNetns): string {
  const links = (ns.ipJson(['link', 'show']) as { ifname: string }[]).map((l) => l.ifname);
  return JSON.stringify([netfilterSnapshot(ns), procQueues(ns), links, ns.tcJson(['qdisc', 'show'])]);
}

const START = ['buffer', 'start'];
const cases: [string, string[], number, RegExp][] = [
  ['no address or port', [...START], 2, /needs at least one of --src, --dst, --sport, --dport/],
  ['port 0', [...START, '--dport', '0'], 2, /--dport "0" is not a port in 1\.\.65535/],
  ['port 70000', [...START, '--sport', '70000'], 2, /--sport "70000" is not a port/],
  ['not an address', [...START, '--src', 'example.com'], 2, /"example\.com" is not an IPv4 or IPv6 address/],
  ['bad prefix', [...START, '--dst', '10.0.0.0/33'], 2, /prefix length must be 0\.\.32/],
  ['two families', [...START, '--src', '127.0.0.1', '--dst', '::1'], 2, /different IP families/],
  ['unknown protocol', [...START, '--proto', 'icmp', '--dport', '5'], 2, /--proto must be tcp or udp, not "icmp"/],
  ['TCP flags on UDP', [...START, '--proto', 'udp', '--dport', '5', '--tcp-flags', 'SYN'], 2, /--tcp-flags needs --proto tcp/],
  ['unknown flag', [...START, '--dport', '5', '--tcp-flags', 'SYN/FOO'], 2, /"FOO" is not a TCP flag/],
  ['flags set outside the mask', [...START, '--dport', '5', '--tcp-flags', 'SYN,ACK/SYN'], 2, /must be among those looked at/],
  ['bad direction', [...START, '--dport', '5', '--direction', 'sideways'], 2, /--direction must be one or both, not "sideways"/],
  ['bad hook', [...START, '--dport', '5', '--at', 'middle'], 2, /--at must be egress or ingress, not "middle"/],
  ['no such device', [...START, '--dport', '5', '--dev', 'nosuch0'], 2, /no network interface named "nosuch0"/],
  ['bad device name', [...START, '--dport', '5', '--dev', 'a/b'], 2, /"a\/b" is not a valid interface name/],
  ['max-hold over 10 min', [...START, '--dport', '5', '--max-hold', '11m'], 2, /--max-hold 660000 ms is not in \(0, 600 s\]/],
  ['bad duration', [...START, '--dport', '5', '--max-hold', 'soon'], 2, /"soon" is not a duration/],
  ['unknown backend', [...START, '--dport', '5', '--backend', 'magic'], 2, /--backend must be auto, plug or nfqueue, not "magic"/],
  ['queue out of range', [...START, '--dport', '5', '--queue-num', '70000'], 2, /--queue-num 70000 is not in 0\.\.65535/],
  ['unknown option', [...START, '--dport', '5', '--colour'], 2, /Unknown option '--colour'/],
  ['unknown subcommand', ['buffer', 'frobnicate'], 2, /unknown subcommand "frobnicate"/],
  ['no subcommand', ['buffer'], 2, /buffer needs a subcommand/],
  ['step count 0', ['buffer', 'step', '--count', '0'], 2, /--count "0" is not a positive integer/],
  ['no buffer to step', ['buffer', 'step'], 3, /no buffer on queue 7100 here/],
  ['no buffer to list', ['buffer', 'list', '--queue-num', '7200'], 3, /no buffer on queue 7200 here/],
];

// Not bad input but a kernel without sch_plug (this project's): exit 1, the missing piece named, the
// probe's IFB gone again. On a kernel with sch_plug the plug buffer runs instead (test/lab-guest/buffer.test.ts).
if (!kernelHas('plug')) {
  cases.push(['plug on a kernel without it', [...START, '--dport', '5', '--backend', 'plug'], 1, /no plug: missing sch_plug .*; use --backend nfqueue/]);
}

for (const [name, args, code, message] of cases) {
  test(`buffer, bad input: ${name} -> exit ${code}, one line, kernel unchanged`, async () => {
    await withNetns(async (ns) => {
      const before = kernelState(ns);
      const r = synhold(['--netns', ns.name, ...args]);
      assert.equal(r.status, code, `exit ${r.status}; stderr: ${r.stderr}`);
      assert.match(r.stderr, /^synhold buffer: .*\n$/, `one line on stderr, got:\n${r.stderr}`);
      assert.match(r.stderr, message);
      assert.equal(r.stdout, '');
      assert.equal(kernelState(ns), before, 'kernel state unchanged');
      assert.equal(existsSync(BufferPaths.for(ns.name, 7100).dir), false, 'no state directory left behind');
    });
  });
}

test("buffer, bad input: protect's own queue -> exit 2, nothing changed", async () => {
  await withNetns(async (ns) => {
    assert.equal(synhold(['--netns', ns.name, 'setup', '--port', '16600', '--backend', 'nfqueue']).status, 0);
    const before = kernelState(ns);
    const r = synhold(['--netns', ns.name, 'buffer', 'start', '--dport', '5', '--queue-num', '7001']);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /^synhold buffer: queue 7001 is the one synhold setup uses for protect here; give the buffer another --queue-num\n$/);
    assert.equal(kernelState(ns), before);
    assert.equal(synhold(['--netns', ns.name, 'teardown']).status, 0);
  });
});

test('buffer, busy: a second start on the same queue -> exit 4, the first buffer untouched', async () => {
  await withNetns(async (ns) => {
    const owner = await startOwner(ns, ['--dport', '16610']);
    try {
      const before = kernelState(ns);
      const r = synhold(['--netns', ns.name, 'buffer', 'start', '--dport', '16611']);
      assert.equal(r.status, 4, r.stderr);
      assert.match(r.stderr, /^synhold buffer: queue 7100 is already bound here .*use another --queue-num\n$/);
      assert.equal(kernelState(ns), before, "the first buffer's rules and queue as they were");
      assert.equal(synhold(['--netns', ns.name, 'buffer', 'release']).status, 0);
      assert.equal((await owner.done).status, 0);
    } finally {
      if (owner.pid) spawnKill(owner.pid);
    }
  });
});

function spawnKill(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}
