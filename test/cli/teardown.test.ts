/**
 * teardown puts the host back exactly as setup found it, after a hold, for the
 * iptables backends (nfqueue, drop), on a host with the `nft` program and on one
 * without it (synhold never runs nft; iptables-nft leaves an empty table behind
 * that synhold removes itself). Oracles: iptables-save and ip6tables-save of both
 * iptables flavours, `nft list ruleset`, the sysctl, all run inside the namespace
 * with the machine's own PATH.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { withNetns, type TestNetns } from '../helpers/netns.js';
import { synhold } from '../helpers/cli.js';
import { pathWithout } from '../helpers/path.js';
import { stateDir } from '../../src/protect/state.js';

function snapshot(ns: TestNetns): Record<string, string> {
  const save = (bin: string) =>
    ns
      .exec(bin, [])
      .split('\n')
      .filter((l) => !l.startsWith('#'))
      .join('\n');
  return {
    'iptables-nft-save': save('iptables-nft-save'),
    'ip6tables-nft-save': save('ip6tables-nft-save'),
    'iptables-legacy-save': save('iptables-legacy-save'),
    'nft list ruleset': ns.exec('nft', ['list', 'ruleset']),
    tcp_migrate_req: ns.exec('sysctl', ['-n', 'net.ipv4.tcp_migrate_req']),
    'tc qdisc': JSON.stringify(ns.tcJson(['qdisc', 'show'])),
  };
}

for (const backend of ['nfqueue', 'drop'] as const) {
  for (const nft of ['with', 'without'] as const) {
    test(`${backend}, host ${nft} the nft program: setup, a hold, teardown -> iptables-save and nft list ruleset exactly as before`, async () => {
      const hidden = nft === 'without' ? pathWithout(['nft']) : undefined;
      const env: Record<string, string> = hidden ? { PATH: hidden.path } : {};
      try {
        await withNetns(async (ns) => {
          const before = snapshot(ns);
          const s = synhold(
            [
              '--netns',
              ns.name,
              'setup',
              '--port',
              '16000',
              '--address',
              '127.0.0.1',
              '--address',
              '::1',
              '--backend',
              backend,
              ...(backend === 'nfqueue' ? ['--steering', 'always'] : []),
            ],
            env,
          );
          assert.equal(s.status, 0, s.stderr);
          const during = snapshot(ns);
          assert.match(during['iptables-nft-save']!, /synhold:/, 'setup installed its IPv4 rule');
          assert.match(during['ip6tables-nft-save']!, /synhold:/, 'setup installed its IPv6 rule');
          const p = synhold(['--netns', ns.name, 'protect', '--', 'true'], env);
          assert.equal(p.status, 0, p.stderr);
          const t = synhold(['--netns', ns.name, 'teardown'], env);
          assert.equal(t.status, 0, t.stderr);
          assert.deepEqual(snapshot(ns), before);
          assert.equal(existsSync(stateDir(ns.name)), false, 'no state left behind');
        });
      } finally {
        hidden?.cleanup();
      }
    });
  }
}
