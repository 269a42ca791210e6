/**
 * The default egress topology's fallback on a real kernel that cannot build the redirect: a lab
 * booted without act_mirred and with on-demand module loading turned off (the kernel's modprobe
 * path set to /bin/false), as on a host whose kernel lacks CONFIG_NET_ACT_MIRRED. `setup` must then
 * build the seed's prio root, say why, and leave nothing of the failed redirect behind; teardown
 * must give lo back as it was. tc, not synhold, is the oracle for both.
 *
 * A test of its own (not in test/lab-guest/): it needs a lab booted with other modules than the
 * guest suite's.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_MODULES, labAvailable, runInLab } from '../../bench/src/lab/uml.js';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

// Each step's output after a marker line, so the host side can tell them apart.
const GUEST = `
set -u
echo /bin/false > /proc/sys/kernel/modprobe
ip netns add fb
step() { echo "=== $1"; shift; "$@" 2>&1; echo "=== exit $?"; }
step lo-before tc -n fb -j qdisc show dev lo
step mirred-by-tc sh -c 'ip -n fb link add fbifb type ifb && tc -n fb qdisc add dev lo clsact && tc -n fb filter add dev lo egress protocol ip prio 1 u32 match u32 0 0 action mirred egress redirect dev fbifb; r=$?; tc -n fb qdisc del dev lo clsact; ip -n fb link del fbifb; exit $r'
step setup node dist/synhold.cjs --netns fb setup --port 16000 --backend plug --json
step lo-set-up tc -n fb -j qdisc show dev lo
step links-set-up ip -n fb -j link show
step status node dist/synhold.cjs --netns fb status
step teardown node dist/synhold.cjs --netns fb teardown
step lo-after tc -n fb -j qdisc show dev lo
step links-after ip -n fb -j link show
ip netns del fb
`;

function steps(out: string): Map<string, { text: string; exit: number }> {
  const found = new Map<string, { text: string; exit: number }>();
  const re = /^=== (\S+)\n([\s\S]*?)^=== exit (\d+)$/gm;
  for (const m of out.matchAll(re)) found.set(m[1]!, { text: m[2]!, exit: Number(m[3]) });
  return found;
}

test(
  'a kernel without act_mirred: setup (default egress topology) builds the seed prio root, says why, leaves no IFB; teardown restores lo',
  { timeout: 180_000 },
  async () => {
    const avail = labAvailable();
    assert.ok(avail.ok, `the kernel lab is unavailable: ${avail.ok ? '' : avail.reason}`);
    const r = await runInLab({
      command: ['sh', '-c', GUEST],
      cwd: repo,
      modules: DEFAULT_MODULES.filter((m) => m !== 'act_mirred'),
      timeoutMs: 150_000,
    });
    assert.equal(r.exitCode, 0, JSON.stringify(r, null, 2));
    const s = steps(r.stdout);
    const get = (name: string) => {
      const x = s.get(name);
      assert.ok(x, `step ${name} missing in:\n${r.stdout}\n${r.stderr}`);
      return x;
    };
    // The precondition, from tc: this kernel cannot redirect (no mirred action, none loadable).
    assert.notEqual(get('mirred-by-tc').exit, 0, `tc added a mirred filter: the lab still has act_mirred\n${get('mirred-by-tc').text}`);

    const setup = get('setup');
    assert.equal(setup.exit, 0, setup.text);
    const report = JSON.parse(setup.text) as { backend: string; topology?: { installed: string; reason?: string } };
    assert.equal(report.backend, 'plug');
    assert.equal(report.topology?.installed, 'prio');
    assert.match(report.topology?.reason ?? '', /^auto: this kernel cannot build the clsact redirect \(.*(action|mirred).*\)$/i);

    const qdiscs = JSON.parse(get('lo-set-up').text) as { kind: string; handle: string; parent?: string; root?: boolean }[];
    assert.ok(
      qdiscs.some((q) => q.kind === 'prio' && q.handle === '5301:' && q.root),
      JSON.stringify(qdiscs),
    );
    assert.ok(
      qdiscs.some((q) => q.kind === 'plug' && q.parent === '5301:4'),
      JSON.stringify(qdiscs),
    );
    assert.ok(!qdiscs.some((q) => q.kind === 'clsact'), 'the failed redirect left no clsact on lo');
    const links = (JSON.parse(get('links-set-up').text) as { ifname: string }[]).map((l) => l.ifname);
    assert.ok(!links.some((n) => n.startsWith('synhold-ifb')), `the failed redirect left no IFB device: ${links.join(' ')}`);
    assert.match(get('status').text, /\(egress, prio root \(auto: this kernel cannot build the clsact redirect/);

    assert.equal(get('teardown').exit, 0, get('teardown').text);
    assert.deepEqual(JSON.parse(get('lo-after').text), JSON.parse(get('lo-before').text), 'lo as before setup');
    assert.deepEqual(
      (JSON.parse(get('links-after').text) as { ifname: string }[]).map((l) => l.ifname),
      ['lo'],
    );
  },
);
