/**
 * Bad input: one clear line on stderr, a documented non-zero exit code, and the
 * system exactly as it was (checked with tc -j, ip -j, nft list ruleset and synhold's own state dir).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { withNetns, type TestNetns } from '../helpers/netns.js';
import { CLI, synhold } from '../helpers/cli.js';
import { pathWithout } from '../helpers/path.js';
import { stateDir } from '../../src/protect/state.js';

function snapshot(ns: TestNetns): string {
  return JSON.stringify([
    ns.tcJson(['qdisc', 'show']),
    ns.ipJson(['link', 'show']).map((l) => (l as { ifname: string }).ifname),
    ns.exec('nft', ['list', 'ruleset']),
  ]);
}

const cases: [string, string[], number, RegExp][] = [
  ['port 0', ['setup', '--port', '0'], 2, /port "0" is not in 1\.\.65535/],
  ['port 70000', ['setup', '--port', '70000'], 2, /port "70000" is not in 1\.\.65535/],
  ['no port', ['setup'], 2, /at least one --port/],
  ['not an IP', ['setup', '--port', '80', '--address', 'example.com'], 2, /"example\.com" is not an IPv4 or IPv6 address/],
  ['bad prefix', ['setup', '--port', '80', '--address', '10.0.0.0/33'], 2, /prefix length must be 0\.\.32/],
  [
    'unknown device',
    ['setup', '--port', '80', '--dev', 'nosuch0', '--backend', 'plug'],
    1,
    /RTM_GETLINK dev nosuch0: ENODEV .*no network interface named "nosuch0"/,
  ],
  ['bad direction', ['setup', '--port', '80', '--direction', 'sideways'], 2, /--direction must be egress or ingress/],
  ['bad backend', ['setup', '--port', '80', '--backend', 'magic'], 2, /--backend must be auto, plug, nfqueue or drop/],
  ['ingress on lo', ['setup', '--port', '80', '--direction', 'ingress'], 2, /needs a real interface/],
  ['bad egress topology', ['setup', '--port', '80', '--egress-topology', 'tree'], 2, /--egress-topology must be auto, prio or clsact, not "tree"/],
  [
    'egress topology with ingress',
    ['setup', '--port', '80', '--direction', 'ingress', '--egress-topology', 'clsact'],
    2,
    /--egress-topology applies to --direction egress only/,
  ],
  ['bad steering', ['setup', '--port', '80', '--steering', 'sometimes'], 2, /--steering must be auto, always or while-holding, not "sometimes"/],
  [
    "steering while-holding with the plug's prio topology (its cost is the root, not the filters)",
    ['setup', '--port', '80', '--backend', 'plug', '--egress-topology', 'prio', '--steering', 'while-holding'],
    2,
    /--steering while-holding needs the plug backend's redirect topology \(--egress-topology clsact, or --direction ingress\)/,
  ],
  [
    'steering with the drop backend',
    ['setup', '--port', '80', '--backend', 'drop', '--steering', 'always'],
    2,
    /--steering applies to the nfqueue and plug backends/,
  ],
  ['unknown option', ['setup', '--port', '80', '--colour'], 2, /Unknown option '--colour'/],
  ['unknown command', ['frobnicate'], 2, /unknown command "frobnicate"/],
  ['bad duration', ['plug', '--max-hold', 'soon'], 2, /"soon" is not a duration/],
  // protect follows timeout(1): its own failures, usage included, exit 125.
  ['protect without --', ['protect', 'true'], 125, /protect needs the command after --/],
  ['protect, bad --settle-wait', ['protect', '--settle-wait', 'later', '--', 'true'], 125, /"later" is not a duration/],
  ['protect, bad --priority', ['protect', '--priority', 'high', '--', 'true'], 125, /--priority must be realtime or normal, not "high"/],
];

for (const [name, args, code, message] of cases) {
  test(`bad input: ${name} -> exit ${code}, one line, nothing changed`, async () => {
    await withNetns(async (ns) => {
      const before = snapshot(ns);
      const r = synhold(['--netns', ns.name, ...args]);
      assert.equal(r.status, code, `exit ${r.status}; stderr: ${r.stderr}`);
      const lines = r.stderr.trimEnd().split('\n');
      assert.match(lines[0]!, message);
      if (code !== 2 || !/unknown command/.test(lines[0]!)) assert.equal(lines.length, 1, `one line on stderr, got:\n${r.stderr}`);
      assert.equal(r.stdout, '');
      assert.equal(snapshot(ns), before, 'kernel state unchanged');
      assert.equal(existsSync(stateDir(ns.name)), false, 'no state left behind');
    });
  });
}

/** Whether this kernel has sch_plug, asked of tc in a throwaway namespace. */
function kernelHasPlug(): boolean {
  return spawnSync('sh', ['-c', 'ip netns add shp-$$ && tc -n shp-$$ qdisc add dev lo root plug; r=$?; ip netns del shp-$$; exit $r']).status === 0;
}

test('a kernel without sch_plug: --backend plug fails with the missing piece named; nothing left behind', async (t) => {
  if (kernelHasPlug()) {
    t.diagnostic('this kernel has sch_plug: the missing-plug path is exercised only where it is missing');
    return;
  }
  await withNetns(async (ns) => {
    ns.exec('ip', ['link', 'add', 'shv0', 'type', 'veth', 'peer', 'name', 'shv1']);
    const before = snapshot(ns);
    const r = synhold(['--netns', ns.name, 'setup', '--port', '16000', '--dev', 'shv0', '--direction', 'ingress', '--backend', 'plug']);
    assert.equal(r.status, 1);
    assert.match(
      r.stderr,
      /^synhold setup: RTM_NEWQDISC dev synhold-ifb\d+ root handle 5302: kind plug: ENOENT \(Specified qdisc kind is unknown\.?\) - this kernel lacks sch_plug .*use --backend nfqueue\n$/,
    );
    assert.equal(snapshot(ns), before, 'the IFB device created on the way was removed again');
    assert.equal(existsSync(stateDir(ns.name)), false);
  });
});

test('a kernel without sch_plug: --egress-topology clsact fails the same way; lo and its links as before', async (t) => {
  if (kernelHasPlug()) {
    t.diagnostic('this kernel has sch_plug: the missing-plug path is exercised only where it is missing');
    return;
  }
  await withNetns(async (ns) => {
    const before = snapshot(ns);
    const r = synhold(['--netns', ns.name, 'setup', '--port', '16000', '--egress-topology', 'clsact', '--backend', 'plug']);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /^synhold setup: .*sch_plug.*\n$/);
    assert.equal(r.stderr.split('\n').length, 2, `one line: ${r.stderr}`);
    assert.equal(snapshot(ns), before, 'nothing left: no IFB device, no clsact on lo');
    assert.equal(existsSync(stateDir(ns.name)), false);
  });
});

test('not root: a clear EPERM, nothing changed', async () => {
  await withNetns(async (ns) => {
    const before = snapshot(ns);
    // setpriv drops every capability while staying uid 0, the honest "no CAP_NET_ADMIN" case.
    const r = spawnSync('setpriv', ['--inh-caps=-all', '--bounding-set=-all', process.execPath, CLI, 'setup', '--port', '16000', '--backend', 'plug'], {
      encoding: 'utf8',
      env: { ...process.env, SYNHOLD_RUN_DIR: '/tmp/synhold-noroot-test' },
    });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /EPERM|EACCES|needs root/);
    assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
    assert.equal(snapshot(ns), before);
  });
});

test('status when not set up: exit 3, says so, --json parses', async () => {
  await withNetns(async (ns) => {
    const r = synhold(['--netns', ns.name, 'status']);
    assert.equal(r.status, 3);
    assert.match(r.stdout, /not set up/);
    const j = synhold(['--netns', ns.name, '--json', 'status']);
    assert.equal(j.status, 3);
    assert.equal((JSON.parse(j.stdout) as { setUp: boolean }).setUp, false);
    assert.equal(existsSync(stateDir(ns.name)), false);
  });
});

test('protect and plug before setup: exit 125 / 3 with a hint to run setup', async () => {
  await withNetns(async (ns) => {
    const p = synhold(['--netns', ns.name, 'protect', '--', 'true']);
    assert.equal(p.status, 125);
    assert.match(p.stderr, /not set up here; run `synhold setup --port P` first/);
    const q = synhold(['--netns', ns.name, 'plug']);
    assert.equal(q.status, 3);
  });
});

test('no nsenter on the host: --netns commands fail with one line naming util-linux (exit 1, protect 125); nothing changed', async () => {
  const p = pathWithout(['nsenter']);
  try {
    await withNetns(async (ns) => {
      const iptables = () =>
        ns
          .exec('iptables-save', [])
          .split('\n')
          .filter((l) => !l.startsWith('#'))
          .join('\n');
      const before = [snapshot(ns), iptables()];
      for (const [args, code] of [
        [['setup', '--port', '16000', '--backend', 'nfqueue'], 1],
        [['protect', '--', 'true'], 125],
        [['teardown'], 1],
      ] as const) {
        const r = synhold(['--netns', ns.name, ...args], { PATH: p.path });
        assert.equal(r.status, code, `${args[0]}: exit ${r.status}; stderr: ${r.stderr}`);
        assert.match(r.stderr, /^synhold \w+: nsenter is not installed \(needed for --netns\): install it \(Debian: apt-get install util-linux\)\n$/);
      }
      assert.deepEqual([snapshot(ns), iptables()], before, 'kernel state unchanged');
      assert.equal(existsSync(stateDir(ns.name)), false, 'no state left behind');
    });
  } finally {
    p.cleanup();
  }
});

test('no iptables on the host: setup with nfqueue --steering always or drop fails with one line naming the iptables package (exit 1), nothing changed; the default steering needs none', async () => {
  const iptablesBins = (process.env.PATH ?? '')
    .split(':')
    .filter((d) => d && existsSync(d))
    .flatMap((d) => readdirSync(d).filter((n) => /^ip6?tables/.test(n)));
  const p = pathWithout(iptablesBins);
  try {
    await withNetns(async (ns) => {
      const before = snapshot(ns);
      for (const args of [
        ['--backend', 'nfqueue', '--steering', 'always'],
        ['--backend', 'drop'],
      ]) {
        const r = synhold(['--netns', ns.name, 'setup', '--port', '16000', ...args], { PATH: p.path });
        assert.equal(r.status, 1, `${args.join(' ')}: exit ${r.status}; stderr: ${r.stderr}`);
        assert.equal(r.stderr.trimEnd().split('\n').length, 1, `one line: ${r.stderr}`);
        assert.match(r.stderr, /iptables-nft is not installed .*apt-get install iptables/);
      }
      assert.equal(snapshot(ns), before, 'kernel state unchanged');
      assert.equal(existsSync(stateDir(ns.name)), false, 'no state left behind');
      // The default steering (auto: while-holding here) adds its table over netlink, no program; so
      // does backend auto where it picks nfqueue (on a kernel with sch_plug it picks plug: no iptables either).
      for (const backend of ['nfqueue', 'auto']) {
        const r = synhold(['--netns', ns.name, '--json', 'setup', '--port', '16000', '--backend', backend], { PATH: p.path });
        assert.equal(r.status, 0, `${backend}: ${r.stderr}`);
        const out = JSON.parse(r.stdout) as { backend: string; steering?: { installed: string } };
        if (out.backend === 'nfqueue') assert.equal(out.steering?.installed, 'while-holding');
        assert.equal(synhold(['--netns', ns.name, 'teardown'], { PATH: p.path }).status, 0);
        assert.equal(snapshot(ns), before, `${backend}: teardown left the kernel as it was`);
      }
    });
  } finally {
    p.cleanup();
  }
});
