/**
 * The filter -> rules mapping, as text (no kernel): what iptables-restore is
 * given to install a buffer and to remove it, and what the watchdog runs.
 * The kernel tests check that these rules hold what they say; this pins their shape.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normalizeFilter, parseTcpFlags, formatTcpFlags } from '../../src/buffer/filter.js';
import { buildSteering, flushArgv, restoreArgv } from '../../src/buffer/steering.js';

test('both directions of one port on lo, no address: IPv4 and IPv6, a jump each way to the chain that queues', () => {
  const s = buildSteering(normalizeFilter({ dport: 8080, direction: 'both' }), 7100, 'nft');
  assert.deepEqual(
    s.families.map((f) => f.family),
    [4, 6],
  );
  assert.equal(
    s.families[0]!.add,
    [
      '*raw',
      ':synhold-buf-7100 - [0:0]',
      '-A synhold-buf-7100 -m comment --comment synhold:buffer:7100 -j NFQUEUE --queue-num 7100 --queue-bypass',
      '-I OUTPUT 1 -o lo -p tcp -m tcp --dport 8080 -m comment --comment synhold:buffer:7100:fwd -j synhold-buf-7100',
      '-I OUTPUT 1 -o lo -p tcp -m tcp --sport 8080 -m comment --comment synhold:buffer:7100:rev -j synhold-buf-7100',
      'COMMIT',
      '',
    ].join('\n'),
  );
  assert.equal(
    s.families[0]!.del,
    [
      '*raw',
      '-D OUTPUT -o lo -p tcp -m tcp --dport 8080 -m comment --comment synhold:buffer:7100:fwd -j synhold-buf-7100',
      '-D OUTPUT -o lo -p tcp -m tcp --sport 8080 -m comment --comment synhold:buffer:7100:rev -j synhold-buf-7100',
      '-F synhold-buf-7100',
      '-X synhold-buf-7100',
      'COMMIT',
      '',
    ].join('\n'),
  );
});

test('a full 5-tuple with flags, ingress on a device: one family, PREROUTING -i, the mirror swaps addresses and ports', () => {
  const f = normalizeFilter({
    src: '10.0.0.1',
    sport: 40000,
    dst: '10.0.0.2/32',
    dport: 80,
    tcpFlags: 'FIN/FIN,RST',
    direction: 'both',
    dev: 'veth0',
    at: 'ingress',
  });
  const s = buildSteering(f, 7200, 'legacy');
  assert.equal(s.families.length, 1);
  const jumps = s.families[0]!.add.split('\n').filter((l) => l.startsWith('-I'));
  assert.deepEqual(jumps, [
    '-I PREROUTING 1 -i veth0 -p tcp -s 10.0.0.1 -d 10.0.0.2 -m tcp --sport 40000 --dport 80 --tcp-flags FIN,RST FIN -m comment --comment synhold:buffer:7200:fwd -j synhold-buf-7200',
    '-I PREROUTING 1 -i veth0 -p tcp -s 10.0.0.2 -d 10.0.0.1 -m tcp --sport 80 --dport 40000 --tcp-flags FIN,RST FIN -m comment --comment synhold:buffer:7200:rev -j synhold-buf-7200',
  ]);
});

test('UDP from an IPv6 source: ip6 only, -m udp', () => {
  const s = buildSteering(normalizeFilter({ proto: 'udp', src: '::1', dport: 53 }), 7100, 'nft');
  assert.deepEqual(
    s.families.map((f) => f.family),
    [6],
  );
  assert.match(s.families[0]!.add, /-I OUTPUT 1 -o lo -p udp -s ::1 -m udp --dport 53 -m comment/);
});

test("the watchdog's commands: short (native/watchdog.c takes 32 words), inside the namespace", () => {
  const s = buildSteering(normalizeFilter({ dport: 8080, direction: 'both' }), 7100, 'nft');
  assert.deepEqual(flushArgv(s, 4, 'ns1'), ['nsenter', '--net=/run/netns/ns1', 'iptables-nft', '-w', '5', '-t', 'raw', '-F', 'synhold-buf-7100']);
  assert.deepEqual(restoreArgv(6, 'nft', '/run/x.del'), ['ip6tables-nft-restore', '-w', '5', '--noflush', '/run/x.del']);
});

test('TCP flags: SET[/MASK] both ways', () => {
  assert.deepEqual(parseTcpFlags('SYN/SYN,ACK'), { set: 0x02, mask: 0x12 });
  assert.deepEqual(parseTcpFlags('fin'), { set: 0x01, mask: 0x01 });
  assert.deepEqual(parseTcpFlags('/RST'), { set: 0, mask: 0x04 });
  assert.equal(formatTcpFlags(0x18), 'PSH,ACK');
  assert.equal(formatTcpFlags(0), '-');
});
