/**
 * `--netns` names a network namespace three ways: a name (/run/netns/NAME), a
 * path, or pid:PID. On this kernel, with `ip netns add` namespaces and a process
 * started inside one (`ip netns exec NS sleep`, found by its PID): every way
 * reaches the same namespace, one state record and one hold lock; a target that
 * does not name a network namespace is one line, exit 2 and nothing changed.
 * Oracles: iptables-save in the namespace, the kernel's queue (/proc), the
 * namespace links of processes (readlink /proc/PID/ns/net).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { withNetns, type TestNetns } from '../helpers/netns.js';
import { CLI, synhold, synholdAsync } from '../helpers/cli.js';
import { commOf, kill, queueBound, until } from '../helpers/faults.js';
import { StateStore } from '../../src/protect/state.js';

/** A process inside the namespace, for the length of fn: `ip netns exec` enters it and execs sleep, so the PID is sleep's. */
async function withProcessIn<T>(ns: TestNetns, fn: (pid: number) => Promise<T>): Promise<T> {
  const child = spawn('ip', ['netns', 'exec', ns.name, 'sleep', '30'], { stdio: 'ignore' });
  const pid = child.pid!;
  try {
    await until('sleep inside the namespace', () => commOf(pid) === 'sleep');
    assert.equal(readlinkSync(`/proc/${pid}/ns/net`), nsLink(ns), 'the process is in the namespace');
    return await fn(pid);
  } finally {
    kill(pid, 'SIGKILL');
  }
}

/** The namespace's identity as the kernel shows it (net:[inode]), read from a process in it. */
function nsLink(ns: TestNetns): string {
  return spawnSync('ip', ['netns', 'exec', ns.name, 'readlink', '/proc/self/ns/net'], { encoding: 'utf8' }).stdout.trim();
}

/** Our rule in the namespace's iptables-save, read with iptables itself. */
function nfqueueRules(ns: TestNetns): string[] {
  return ns
    .exec('iptables-save', [])
    .split('\n')
    .filter((l) => /NFQUEUE/.test(l));
}

function ok(args: string[]): ReturnType<typeof synhold> {
  const r = synhold(args);
  assert.equal(r.status, 0, `synhold ${args.join(' ')}: exit ${r.status}: ${r.stderr}${r.stdout}`);
  return r;
}

test('--netns: set up by name, status and a hold by pid:PID, release and teardown by path: one namespace, one state, one hold lock', async () => {
  await withNetns((ns) =>
    withProcessIn(ns, async (pid) => {
      const byPid = `pid:${pid}`;
      const byProc = `/proc/${pid}/ns/net`;
      try {
        ok(['--netns', ns.name, 'setup', '--port', '16000', '--backend', 'nfqueue', '--steering', 'always']);
        assert.equal(nfqueueRules(ns).length, 1, 'the rule is in the namespace');
        for (const target of [byPid, byProc, ns.path]) {
          const s = JSON.parse(ok(['--netns', target, '--json', 'status']).stdout) as { setUp: boolean; backend: string; config: { ports: number[] } };
          assert.equal(s.setUp, true, `status through ${target}`);
          assert.equal(s.backend, 'nfqueue');
          assert.deepEqual(s.config.ports, [16000]);
        }
        assert.equal(StateStore.for(byProc).dir, StateStore.for(ns.name).dir, 'one state directory');

        // A hold taken through the PID is the hold of the name: the lock is one.
        ok(['--netns', byPid, 'plug', '--max-hold', '30s']);
        assert.ok(await queueBound(ns), 'the queue is bound in the namespace');
        const busy = synhold(['--netns', ns.name, 'plug', '--lock-wait', '100ms']);
        assert.equal(busy.status, 4, `a second hold by name is busy: ${busy.stderr}`);
        const st = JSON.parse(ok(['--netns', ns.name, '--json', 'status']).stdout) as { held: boolean };
        assert.equal(st.held, true);
        ok(['--netns', ns.path, 'release']);
        await until('the queue to be unbound', async () => !(await queueBound(ns)));

        ok(['--netns', ns.path, 'teardown']);
        assert.deepEqual(nfqueueRules(ns), [], 'teardown through the path removed the rule');
        assert.equal(JSON.parse(synhold(['--netns', byPid, '--json', 'status']).stdout).setUp, false);
      } finally {
        synhold(['--netns', ns.name, 'teardown']);
      }
    }),
  );
});

test("--netns pid:PID: protect runs CMD in that process's namespace", async () => {
  await withNetns((ns) =>
    withProcessIn(ns, async (pid) => {
      try {
        ok(['--netns', ns.name, 'setup', '--port', '16000', '--backend', 'nfqueue']);
        const r = ok(['--netns', `pid:${pid}`, 'protect', '--', 'readlink', '/proc/self/ns/net']);
        assert.equal(r.stdout.trim(), nsLink(ns));
        assert.notEqual(r.stdout.trim(), readlinkSync('/proc/self/ns/net'), 'not the host namespace');
      } finally {
        synhold(['--netns', ns.name, 'teardown']);
      }
    }),
  );
});

test('--netns pid:PID is pinned: a daemon started that way still holds in the namespace after the process has exited', async () => {
  await withNetns(async (ns) => {
    ok(['--netns', ns.name, 'setup', '--port', '16000', '--backend', 'nfqueue']);
    let daemon: ReturnType<typeof synholdAsync> | undefined;
    try {
      await withProcessIn(ns, async (pid) => {
        daemon = synholdAsync(['--netns', `pid:${pid}`, 'daemon']);
        await until('the daemon socket', () => existsSync(StateStore.for(ns.name).daemonSocketPath));
      });
      // The sleep is gone, and /proc/PID/ns/net with it. A hold through the daemon still works in
      // the namespace: CMD, run during the hold, reads status there.
      const r = ok(['--netns', ns.name, 'protect', '--', process.execPath, CLI, '--netns', ns.name, '--json', 'status']);
      const hold = (JSON.parse(r.stdout) as { hold?: { via: string; owner: { pid: number } } }).hold;
      assert.equal(hold?.via, 'daemon', r.stdout);
      assert.equal(hold?.owner.pid, daemon!.pid);
    } finally {
      if (daemon) {
        kill(daemon.pid, 'SIGTERM');
        const d = await daemon.done;
        assert.equal(d.status, 0, `the daemon stopped cleanly: ${d.stderr}`);
      }
      synhold(['--netns', ns.name, 'teardown']);
    }
  });
});

/**
 * Network state that a wrong target must leave alone: the host's iptables, and
 * synhold's state directories (none created; one removed meanwhile is another
 * test's namespace ending, not ours to judge).
 */
function hostSnapshot(): { iptables: string; stateDirs: string[] } {
  const iptables = spawnSync('iptables-save', [], { encoding: 'utf8' })
    .stdout.split('\n')
    .filter((l) => !l.startsWith('#'))
    .join('\n');
  return { iptables, stateDirs: existsSync('/run/synhold') ? readdirSync('/run/synhold').sort() : [] };
}

test('--netns that names no network namespace: one line, exit 2 (protect 125), nothing changed', async () => {
  const exited = spawnSync(process.execPath, ['-e', '0']);
  const stale = `/run/netns/synhold-stale-${process.pid}`;
  // What a half-finished `ip netns add` leaves: a plain file where the bind mount should be.
  writeFileSync(stale, '');
  try {
    const cases: [string, RegExp][] = [
      ['synhold-nosuch-ns', /no network namespace named synhold-nosuch-ns \(\/run\/netns\/synhold-nosuch-ns\)$/],
      ['4194303', /no network namespace named 4194303 .*; for the namespace of process 4194303, use --netns pid:4194303$/],
      [`pid:${exited.pid}`, new RegExp(`no process ${exited.pid} \\(/proc/${exited.pid}/ns/net\\)$`)],
      ['pid:12ab', /"12ab" is not a process id$/],
      ['/run/netns/synhold-nosuch-ns', /no network namespace at \/run\/netns\/synhold-nosuch-ns$/],
      ['/etc/hostname', /\/etc\/hostname is not a namespace \(not an nsfs file\)$/],
      [stale, /is not a namespace \(not an nsfs file\)$/],
      ['/proc/self/ns/mnt', /\/proc\/self\/ns\/mnt is a namespace, but not a network namespace$/],
    ];
    const before = hostSnapshot();
    for (const [target, message] of cases) {
      for (const [args, code] of [
        [['setup', '--port', '16000', '--backend', 'nfqueue'], 2],
        [['status'], 2],
        [['teardown'], 2],
        [['protect', '--', 'true'], 125],
      ] as const) {
        for (const argv of [
          ['--netns', target, ...args],
          [args[0], '--netns', target, ...args.slice(1)],
        ]) {
          const r = synhold(argv);
          assert.equal(r.status, code, `${argv.join(' ')}: exit ${r.status}; ${r.stderr}`);
          assert.equal(r.stdout, '');
          const lines = r.stderr.trimEnd().split('\n');
          assert.equal(lines.length, 1, `one line: ${r.stderr}`);
          assert.match(lines[0]!, new RegExp(`^synhold ${args[0]}: --netns ${target.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: `));
          assert.match(lines[0]!, message);
        }
      }
    }
    const after = hostSnapshot();
    assert.equal(after.iptables, before.iptables, "the host's iptables are untouched");
    assert.deepEqual(
      after.stateDirs.filter((d) => !before.stateDirs.includes(d)),
      [],
      'no synhold state directory created',
    );
  } finally {
    rmSync(stale, { force: true });
  }
});
