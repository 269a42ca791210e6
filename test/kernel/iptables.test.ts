/**
 * synhold's iptables rules on the real kernel, each test in a fresh network
 * namespace, checked with oracles that are not synhold's code: `iptables-save`
 * and `iptables -S` run with `ip netns exec`, `nft list ruleset`, the rule
 * counters, and what a client inside the namespace sees.
 *
 * Run: cd /work/main && npx tsc -p . && node --test dist/test/kernel/iptables.test.js
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { parsePrefix } from '../../src/model/prefix.js';
import { withNetns, type TestNetns } from '../helpers/netns.js';
import { pathWithout } from '../helpers/path.js';
import {
  Iptables,
  IptablesError,
  IptablesUnavailableError,
  detectIptables,
  iptablesHint,
  runCommand,
  splitRuleLine,
  type IptablesBackend,
} from '../../src/netfilter/iptables.js';
import { RuleSpecError, dropJumpRule, nfqueueRule, type IptablesRule } from '../../src/netfilter/rules.js';
import { DropSwitch } from '../../src/netfilter/drop.js';

const PORT = 18080;

/** Oracle: `iptables-save` for a backend and family, run by iptables itself inside the namespace, without `#` lines. */
function save(ns: TestNetns, backend: IptablesBackend, family: 4 | 6 = 4): string {
  const bin = `${family === 6 ? 'ip6tables' : 'iptables'}-${backend}-save`;
  return ns
    .exec(bin, [])
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .join('\n');
}

/** Can this backend install an NFQUEUE rule here? Asked of iptables directly, in a scratch namespace. */
function works(backend: IptablesBackend, family: 4 | 6 = 4): boolean {
  const bin = `${family === 6 ? 'ip6tables' : 'iptables'}-${backend}`;
  const r = spawnSync('unshare', [
    '--net',
    bin,
    '-w',
    '5',
    '-t',
    'raw',
    '-A',
    'PREROUTING',
    '-p',
    'tcp',
    '--syn',
    '-j',
    'NFQUEUE',
    '--queue-num',
    '3',
    '--queue-bypass',
  ]);
  return r.status === 0;
}

const NFT = works('nft');
const LEGACY = works('legacy');
const NFT6 = works('nft', 6);
if (!NFT) console.error('iptables.test: iptables-nft cannot install an NFQUEUE rule on this kernel: nft tests SKIPPED (run the kernel lab)');
if (!LEGACY) console.error('iptables.test: iptables-legacy cannot install an NFQUEUE rule on this kernel: legacy tests SKIPPED');

const tagged = (text: string, tag: string): number => text.split('\n').filter((l) => l.includes(`"${tag}"`)).length;

test('detect: nft first; the probe leaves no trace in the namespace (not even the legacy raw table)', { skip: !NFT && !LEGACY }, async (t) => {
  await withNetns(async (ns) => {
    const snapshot = () => ({
      legacyTables: ns.exec('cat', ['/proc/net/ip_tables_names']),
      nft: ns.exec('nft', ['list', 'ruleset']),
    });
    const before = snapshot();
    const t0 = performance.now();
    const ipt = await detectIptables({ netns: ns.name });
    const ms = performance.now() - t0;
    assert.equal(ipt.backend, NFT ? 'nft' : 'legacy', 'nft when it works, else legacy');
    assert.equal(ipt.bin, NFT ? 'iptables-nft' : 'iptables-legacy');
    const legacy = await detectIptables({ netns: ns.name, order: ['legacy'], need: 'drop' });
    assert.equal(legacy.backend, 'legacy');
    assert.deepEqual(snapshot(), before, 'probes ran in throwaway namespaces');
    assert.equal(before.legacyTables, '', 'and the legacy raw table was not instantiated here');
    t.diagnostic(`detectIptables picked ${ipt.backend} in ${ms.toFixed(1)} ms`);
  });
});

for (const backend of ['nft', 'legacy'] as const) {
  test(
    `${backend}: NFQUEUE rule is idempotent, goes first, and its removal restores iptables-save exactly with other rules untouched`,
    { skip: backend === 'nft' ? !NFT : !LEGACY },
    async (t) => {
      await withNetns(async (ns) => {
        const bin = `iptables-${backend}`;
        // Someone else's rules, before and after where ours will go.
        ns.exec(bin, ['-w', '5', '-t', 'raw', '-A', 'PREROUTING', '-p', 'tcp', '--dport', '22', '-m', 'comment', '--comment', 'foreign-ssh', '-j', 'ACCEPT']);
        ns.exec(bin, ['-w', '5', '-t', 'raw', '-A', 'PREROUTING', '-p', 'udp', '--dport', '53', '-j', 'ACCEPT']);
        ns.exec(bin, ['-w', '5', '-t', 'filter', '-A', 'INPUT', '-p', 'tcp', '--dport', String(PORT), '-j', 'ACCEPT']);
        const before = save(ns, backend);

        const ipt = new Iptables({ backend, netns: ns.name });
        const rule = nfqueueRule({ port: PORT, queue: 7, dst: parsePrefix('127.0.0.1'), family: 4 });
        let t0 = performance.now();
        assert.deepEqual(await ipt.ensure(rule), { added: true });
        const addMs = performance.now() - t0;
        t0 = performance.now();
        assert.deepEqual(await ipt.ensure(rule), { added: false }, 'second ensure finds it (-C)');
        const checkMs = performance.now() - t0;
        assert.equal(await ipt.has(rule), true);

        const during = save(ns, backend);
        assert.equal(tagged(during, 'synhold:nfqueue:7:18080'), 1, during);
        const chain = ns
          .exec(bin, ['-w', '5', '-t', 'raw', '-S', 'PREROUTING'])
          .split('\n')
          .filter((l) => l.startsWith('-A'));
        assert.match(
          chain[0]!,
          /-d 127\.0\.0\.1\/32 -p tcp -m tcp --dport 18080 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment "?synhold:nfqueue:7:18080"? -j NFQUEUE --queue-num 7 --queue-bypass/,
        );
        assert.match(chain[1]!, /foreign-ssh/, 'inserted before the existing rules');
        assert.equal(chain.length, 3);

        t0 = performance.now();
        assert.deepEqual(await ipt.remove(rule), { removed: 1 });
        const delMs = performance.now() - t0;
        assert.equal(save(ns, backend), before, 'iptables-save reads exactly as before');
        assert.deepEqual(await ipt.remove(rule), { removed: 0 }, 'removing again is a no-op');
        t.diagnostic(`${backend}: ensure (check + insert) ${addMs.toFixed(1)} ms, ensure (present) ${checkMs.toFixed(1)} ms, remove ${delMs.toFixed(1)} ms`);
      });
    },
  );
}

test(
  'nft, fresh namespace: iptables-nft leaves the raw table behind; remove() tidies it, so iptables-save and nft read as before',
  { skip: !NFT },
  async (t) => {
    await withNetns(async (ns) => {
      const before = save(ns, 'nft');
      const nftBefore = ns.exec('nft', ['list', 'ruleset']);
      assert.equal(before.trim(), '', 'nothing at all');
      const ipt = new Iptables({ backend: 'nft', netns: ns.name });
      const rule = nfqueueRule({ port: PORT, queue: 7, family: 4 });
      await ipt.ensure(rule);
      // What iptables alone would leave: delete the rule with iptables itself.
      ns.exec('iptables-nft', ['-t', 'raw', '-D', rule.chain, ...rule.spec]);
      const leftover = save(ns, 'nft');
      assert.match(leftover, /^\*raw$/m, 'iptables-nft -D leaves the table and chain');
      t.diagnostic(`left by iptables-nft -D alone: ${JSON.stringify(ns.exec('nft', ['list', 'ruleset']))}`);
      assert.equal(await ipt.tidyTable('raw'), true);
      assert.equal(save(ns, 'nft'), before);
      assert.equal(ns.exec('nft', ['list', 'ruleset']), nftBefore);

      // A table that holds anything else is never tidied.
      await ipt.ensure(rule);
      ns.exec('iptables-nft', ['-t', 'raw', '-A', 'OUTPUT', '-p', 'udp', '-j', 'ACCEPT']);
      await ipt.remove(rule);
      assert.match(save(ns, 'nft'), /-A OUTPUT -p udp -j ACCEPT/);
    });
  },
);

/** Runs in the child: proves nft cannot be found, then removes synhold's rule with remove() or removeTagged(). */
const NO_NFT_CHILD = `
import { spawnSync } from 'node:child_process';
const [iptablesUrl, rulesUrl, netns, family, how, port] = process.argv.slice(1);
const { Iptables } = await import(iptablesUrl);
const { nfqueueRule } = await import(rulesUrl);
const nft = spawnSync('nft', ['--version']);
const ipt = new Iptables({ backend: 'nft', family: Number(family), netns });
const rule = nfqueueRule({ port: Number(port), queue: 7, family: Number(family) });
const result = how === 'remove' ? await ipt.remove(rule) : await ipt.removeTagged();
console.log(JSON.stringify({ nft: nft.error?.code ?? nft.status, result }));
`;

for (const family of [4, 6] as const) {
  for (const how of ['remove', 'removeTagged'] as const) {
    test(
      `nft, fresh namespace, no nft program on PATH (IPv${family}): ${how}() leaves iptables-nft-save and nft list ruleset exactly as before`,
      { skip: family === 6 ? !NFT6 : !NFT },
      async () => {
        const hidden = pathWithout(['nft']);
        try {
          await withNetns(async (ns) => {
            const before = { save: save(ns, 'nft', family), nft: ns.exec('nft', ['list', 'ruleset']) };
            const rule = nfqueueRule({ port: PORT, queue: 7, family });
            await new Iptables({ backend: 'nft', family, netns: ns.name }).ensure(rule);
            assert.equal(tagged(save(ns, 'nft', family), 'synhold:nfqueue:7:18080'), 1);
            const child = spawnSync(
              process.execPath,
              [
                '--input-type=module',
                '-e',
                NO_NFT_CHILD,
                new URL('../../src/netfilter/iptables.js', import.meta.url).href,
                new URL('../../src/netfilter/rules.js', import.meta.url).href,
                ns.name,
                String(family),
                how,
                String(PORT),
              ],
              { env: { PATH: hidden.path }, encoding: 'utf8', timeout: 30000 },
            );
            assert.equal(child.status, 0, child.stderr);
            const out = JSON.parse(child.stdout) as { nft: string | number; result: unknown };
            assert.equal(out.nft, 'ENOENT', 'the child cannot find nft');
            assert.deepEqual(out.result, how === 'remove' ? { removed: 1 } : { removed: 1, chains: 0 });
            assert.equal(save(ns, 'nft', family), before.save, `${family === 6 ? 'ip6' : 'ip'}tables-nft-save reads exactly as before`);
            assert.equal(ns.exec('nft', ['list', 'ruleset']), before.nft, 'nft list ruleset reads exactly as before (no empty raw table)');
          });
        } finally {
          hidden.cleanup();
        }
      },
    );
  }
}

test('legacy, fresh namespace: the raw table, once used, stays (x_tables tables cannot be removed); only our rule is gone', { skip: !LEGACY }, async (t) => {
  await withNetns(async (ns) => {
    assert.equal(save(ns, 'legacy').trim(), '');
    const ipt = new Iptables({ backend: 'legacy', netns: ns.name });
    const rule = nfqueueRule({ port: PORT, queue: 7, family: 4 });
    await ipt.ensure(rule);
    await ipt.remove(rule);
    const after = save(ns, 'legacy');
    assert.doesNotMatch(after, /^-A /m);
    assert.equal(after.trim(), '*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT');
    t.diagnostic('legacy leaves an empty raw table once instantiated: the kernel registers it per namespace on first use and never drops it');
  });
});

test('ip6tables (nft): an IPv6 rule, removal restores ip6tables-save exactly', { skip: !NFT6 }, async () => {
  await withNetns(async (ns) => {
    ns.exec('ip6tables-nft', ['-w', '5', '-t', 'raw', '-A', 'PREROUTING', '-p', 'udp', '-j', 'ACCEPT']);
    const before = save(ns, 'nft', 6);
    const ipt = new Iptables({ backend: 'nft', family: 6, netns: ns.name });
    const rule = nfqueueRule({ port: PORT, queue: 9, dst: parsePrefix('::1'), family: 6 });
    assert.equal(rule.family, 6);
    assert.deepEqual(await ipt.ensure(rule), { added: true });
    assert.match(
      save(ns, 'nft', 6),
      /-d ::1\/128 -p tcp -m tcp --dport 18080 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment "synhold:nfqueue:9:18080" -j NFQUEUE --queue-num 9 --queue-bypass/,
    );
    assert.equal(save(ns, 'nft', 4).trim(), '', 'nothing in the IPv4 tables');
    await ipt.remove(rule);
    assert.equal(save(ns, 'nft', 6), before);
    await assert.rejects(new Iptables({ backend: 'nft', family: 4, netns: ns.name }).ensure(rule), RuleSpecError);
  });
});

test(
  'drop switch: SYNs dropped while holding (the client retransmits after ~1 s), none after release; teardown restores iptables-save',
  { skip: !NFT && !LEGACY },
  async (t) => {
    await withNetns(async (ns) => {
      const backend: IptablesBackend = NFT ? 'nft' : 'legacy';
      const server = spawn('ip', [
        'netns',
        'exec',
        ns.name,
        'node',
        '-e',
        `require('net').createServer((s) => s.end()).listen(${PORT}, '127.0.0.1', () => console.log('ready'))`,
      ]);
      try {
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error('server did not start')), 10000);
          server.stdout.once('data', () => {
            clearTimeout(timer);
            resolve();
          });
        });
        const before = save(ns, backend);
        const ipt = new Iptables({ backend, netns: ns.name });
        const sw = new DropSwitch(ipt, [{ port: PORT, family: 4 }]);
        await sw.setup();
        await sw.setup(); // idempotent
        assert.equal(tagged(save(ns, backend), 'synhold:drop:18080'), 1);
        assert.equal(await sw.holding(), false);

        const connectMs = (): Promise<number> =>
          new Promise((resolve, reject) => {
            const c = spawn('ip', [
              'netns',
              'exec',
              ns.name,
              'node',
              '-e',
              `const t = performance.now(); const s = require('net').connect(${PORT}, '127.0.0.1', () => { console.log(performance.now() - t); s.destroy(); }); s.on('error', (e) => { console.log('error ' + e.code); });`,
            ]);
            let out = '';
            c.stdout.on('data', (d: Buffer) => (out += d.toString()));
            c.on('exit', () => (/^\d/.test(out) ? resolve(Number(out)) : reject(new Error(`client: ${out}`))));
          });

        assert.ok((await connectMs()) < 50, 'not holding: immediate');
        let t0 = performance.now();
        await sw.hold();
        const holdMs = performance.now() - t0;
        assert.equal(await sw.holding(), true);
        const pending = connectMs();
        await sleep(300);
        // Oracle: the DROP rule's own packet counter.
        const dropRow = ns
          .exec(ipt.bin, ['-w', '5', '-t', 'raw', '-L', 'synhold-drop', '-v', '-x', '-n'])
          .split('\n')
          .find((l) => l.includes('DROP'));
        assert.equal(Number(dropRow?.trim().split(/\s+/)[0]), 1, `the SYN hit the DROP rule: ${dropRow}`);
        t0 = performance.now();
        await sw.release();
        const releaseMs = performance.now() - t0;
        const ms = await pending;
        assert.ok(ms >= 900, `a SYN that hit the hold costs a retransmission: ${ms} ms`);
        assert.equal(await sw.holding(), false);
        assert.ok((await connectMs()) < 50, 'released: immediate');
        await sw.release(); // idempotent
        await sw.teardown();
        assert.equal(save(ns, backend), before, 'teardown restores iptables-save');
        t.diagnostic(
          `${backend}: hold ${holdMs.toFixed(1)} ms, release ${releaseMs.toFixed(1)} ms (spawning iptables); held client connected after ${ms.toFixed(0)} ms (its first SYN dropped, the 1 s retransmission passed)`,
        );
      } finally {
        if (server.pid) process.kill(server.pid, 'SIGKILL');
      }
    });
  },
);

test('removeTagged: after a crash, every synhold rule and chain goes, nothing else', { skip: !NFT && !LEGACY }, async () => {
  await withNetns(async (ns) => {
    const backend: IptablesBackend = NFT ? 'nft' : 'legacy';
    const bin = `iptables-${backend}`;
    ns.exec(bin, ['-w', '5', '-t', 'raw', '-A', 'PREROUTING', '-p', 'tcp', '--dport', '22', '-m', 'comment', '--comment', 'not synhold', '-j', 'ACCEPT']);
    const before = save(ns, backend);
    const a = new Iptables({ backend, netns: ns.name });
    await a.ensure(nfqueueRule({ port: PORT, queue: 7, family: 4 }));
    await a.ensure(nfqueueRule({ port: PORT + 1, queue: 7, src: parsePrefix('10.0.0.0/8'), family: 4 }));
    const sw = new DropSwitch(a, [
      { port: PORT, family: 4 },
      { port: PORT + 2, family: 4 },
    ]);
    await sw.setup();
    await sw.hold();
    // A new process that remembers nothing.
    const b = new Iptables({ backend, netns: ns.name });
    // 2 NFQUEUE rules, 2 jumps, the DROP inside the chain; then the chain.
    assert.deepEqual(await b.removeTagged(), { removed: 5, chains: 1 });
    assert.equal(save(ns, backend), before);
  });
});

test('errors: what ran, the exit code, the stderr tail, and a hint', { skip: !NFT && !LEGACY }, async () => {
  await withNetns(async (ns) => {
    const backend: IptablesBackend = NFT ? 'nft' : 'legacy';
    const ipt = new Iptables({ backend, netns: ns.name });
    const bogus: IptablesRule = { family: 4, table: 'raw', chain: 'PREROUTING', spec: ['-p', 'tcp', '-j', 'NOSUCHTARGET'] };
    await assert.rejects(ipt.ensure(bogus), (e: unknown) => {
      assert.ok(e instanceof IptablesError);
      assert.equal(e.code, 'ERR_IPTABLES');
      assert.equal(e.exitCode, 2);
      assert.deepEqual(e.command.slice(0, 3), ['nsenter', `--net=/run/netns/${ns.name}`, `iptables-${backend}`]);
      assert.match(
        e.message,
        /^Command failed with exit code 2: nsenter --net=\S+ iptables-\w+ -w 5 -t raw -C PREROUTING -p tcp -j NOSUCHTARGET\n/,
        'ensure() fails at its -C',
      );
      assert.match(e.stderrTail, /NOSUCHTARGET/);
      return true;
    });
  });
  // A missing program, directly and through nsenter.
  await assert.rejects(runCommand(['iptables-nosuch', '-S']), (e: unknown) => {
    assert.ok(e instanceof IptablesError);
    assert.match(e.message, /^Command could not start \(ENOENT\): iptables-nosuch -S\n- iptables-nosuch is not installed: install the iptables package/);
    return true;
  });
  await withNetns(async (ns) => {
    await assert.rejects(runCommand(['nsenter', `--net=/run/netns/${ns.name}`, 'iptables-nosuch', '-S']), (e: unknown) => {
      assert.ok(e instanceof IptablesError);
      assert.equal(e.exitCode, 127);
      assert.match(e.hint ?? '', /^iptables-nosuch is not installed/);
      return true;
    });
  });
});

test('hints for kernels without the pieces (stderr as iptables printed it in the kernel lab, UML 7.2.7)', () => {
  // Captured in User-Mode Linux 7.2.7 (CONFIG_NF_TABLES=m but no NF_TABLES_IPV4; no XTABLES_LEGACY).
  const nftNoModule =
    'Warning: Extension tcp revision 0 not supported, missing kernel module?\nWarning: Extension NFQUEUE revision 0 not supported, missing kernel module?\niptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Invalid argument\n';
  const nftNoIpFamily = 'iptables v1.8.9 (nf_tables):  TABLE_ADD failed (Operation not supported): table raw\n';
  const legacyNoRaw =
    "modprobe: FATAL: Module ip_tables not found in directory /lib/modules/7.2.7\niptables v1.8.9 (legacy): can't initialize iptables table `raw': Table does not exist (do you need to insmod?)\nPerhaps iptables or your kernel needs to be upgraded.\n";
  assert.match(iptablesHint('iptables-nft', nftNoModule) ?? '', /lacks nf_tables \(CONFIG_NF_TABLES\)/, 'the table error wins over the extension warnings');
  assert.match(iptablesHint('iptables-nft', nftNoIpFamily) ?? '', /CONFIG_NF_TABLES_IPV4/);
  assert.match(iptablesHint('iptables-legacy', legacyNoRaw) ?? '', /legacy raw table \(CONFIG_IP_NF_RAW/);
  // A kernel with the tables but without xt_NFQUEUE (not captured: no machine here lacks only that):
  // iptables warns as above for the missing revision, then the kernel refuses the target.
  const noNfqueue = 'Warning: Extension NFQUEUE revision 0 not supported, missing kernel module?\niptables: No chain/target/match by that name.\n';
  assert.match(iptablesHint('iptables-legacy', noNfqueue) ?? '', /lacks the NFQUEUE target \(CONFIG_NETFILTER_XT_TARGET_NFQUEUE/);

  const err = (stderr: string) =>
    new IptablesError({ command: ['unshare', '--net', 'iptables-x'], exitCode: 4, stderr, hint: iptablesHint('iptables-x', stderr) });
  const u = new IptablesUnavailableError(4, [
    { backend: 'nft', error: err(nftNoModule) },
    { backend: 'legacy', error: err(legacyNoRaw) },
  ]);
  assert.equal(u.code, 'ERR_IPTABLES_UNAVAILABLE');
  assert.match(
    u.message,
    /^no working iptables on this kernel:\n {2}nft: iptables v1\.8\.9 \(nf_tables\): Could not fetch rule set generation id: Invalid argument - this kernel lacks nf_tables.*\n {2}legacy: iptables v1\.8\.9 \(legacy\): can't initialize iptables table `raw'.* - this kernel lacks the legacy raw table/,
  );
});

test('rule builders: validation, and iptables -S lines split back into arguments', () => {
  assert.throws(() => nfqueueRule({ port: 0, queue: 1, family: 4 }), RuleSpecError);
  assert.throws(() => nfqueueRule({ port: 80, queue: 70000, family: 4 }), RuleSpecError);
  assert.throws(() => nfqueueRule({ port: 80, queue: 1, dst: parsePrefix('::1'), family: 4 }), /do not all belong to IPv4/);
  assert.throws(() => nfqueueRule({ port: 80, queue: 1, dst: parsePrefix('10.0.0.1'), src: parsePrefix('::1'), family: 4 }), RuleSpecError);
  assert.throws(() => nfqueueRule({ port: 80, queue: 1, tag: 'synhold:has space', family: 4 }), RuleSpecError);
  assert.throws(() => nfqueueRule({ port: 80, queue: 1, tag: 'other:tag', family: 4 }), RuleSpecError);
  assert.deepEqual(nfqueueRule({ port: 443, queue: 2, bypass: false, family: 4 }).spec.slice(-4), ['-j', 'NFQUEUE', '--queue-num', '2']);
  assert.deepEqual(dropJumpRule({ port: 80, dst: parsePrefix('192.0.2.1'), family: 4 }).spec, [
    '-p',
    'tcp',
    '-d',
    '192.0.2.1',
    '--syn',
    '--dport',
    '80',
    '-m',
    'comment',
    '--comment',
    'synhold:drop:80',
    '-j',
    'synhold-drop',
  ]);
  assert.deepEqual(splitRuleLine('-A PREROUTING -p tcp -m comment --comment "a \\"b\\" c" -j ACCEPT'), [
    '-A',
    'PREROUTING',
    '-p',
    'tcp',
    '-m',
    'comment',
    '--comment',
    'a "b" c',
    '-j',
    'ACCEPT',
  ]);
  assert.deepEqual(splitRuleLine('-A X -m comment --comment ""'), ['-A', 'X', '-m', 'comment', '--comment', '']);
});
