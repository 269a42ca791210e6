/**
 * synhold run from a PID namespace of its own (a container, a pod, a bare CI run): /proc/locks
 * there leaves out every flock whose taker is not visible, dead ones included, so a manual hold's
 * lock (taken by `synhold plug`, kept by its watchdog after plug exited) was invisible and `status`
 * called the live hold a stale record (exit 5). Found by scripts/ci-bare.sh, whose run lives in a
 * PID namespace. The oracle for "held" is the kernel's queue (/proc/net/netfilter/nfnetlink_queue
 * read in the namespace), not synhold's own record.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { CLI, synhold } from '../helpers/cli.js';
import { queueBound, until } from '../helpers/faults.js';
import { withNetns } from '../helpers/netns.js';

/** synhold as a process in a new PID namespace (with its own /proc), as a container runs it. */
function inPidNamespace(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('unshare', ['--pid', '--fork', '--mount-proc', process.execPath, CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('from a PID namespace of its own: status sees a manual hold whose plug has exited (held, exit 0), and after release none', async () => {
  await withNetns(async (ns) => {
    try {
      assert.equal(synhold(['--netns', ns.name, 'setup', '--port', '16000', '--backend', 'nfqueue']).status, 0);
      const plug = synhold(['--netns', ns.name, 'plug', '--max-hold', '30s']);
      assert.equal(plug.status, 0, plug.stderr);
      assert.ok(await queueBound(ns), 'the kernel holds: the queue is bound');

      // The lock's taker (plug) is gone; its watchdog keeps the lock, in the initial PID namespace.
      const st = inPidNamespace(['--netns', ns.path, '--json', 'status']);
      assert.equal(st.status, 0, `status from a PID namespace: exit ${st.status}: ${st.stderr}${st.stdout}`);
      const s = JSON.parse(st.stdout) as { held: boolean; problem?: string };
      assert.equal(s.held, true);
      assert.equal(s.problem, undefined);
      // And a second hold from there is busy, not a second holder.
      const busy = inPidNamespace(['--netns', ns.path, 'plug', '--lock-wait', '100ms']);
      assert.equal(busy.status, 4, `a second hold is busy: ${busy.stderr}`);

      assert.equal(synhold(['--netns', ns.name, 'release']).status, 0);
      await until('the queue to be unbound', async () => !(await queueBound(ns)));
      const after = JSON.parse(inPidNamespace(['--netns', ns.path, '--json', 'status']).stdout) as { held: boolean; problem?: string };
      assert.equal(after.held, false);
      assert.equal(after.problem, undefined);
    } finally {
      synhold(['--netns', ns.name, 'teardown']);
    }
  });
});
