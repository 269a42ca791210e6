/**
 * `synhold status`'s exit status as a health check (0 healthy, 3 not set up, 5
 * set up with a problem), and the Nagios-style check docs/OPERATIONS.md gives,
 * run exactly as written there, against a real namespace on this kernel: not
 * set up, set up, the steering removed behind synhold's back, and a hold record
 * left by processes that are gone.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { withNetns, type TestNetns } from '../helpers/netns.js';
import { CLI, synhold } from '../helpers/cli.js';
import { until } from '../helpers/faults.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));

/** The shell snippet under "A Nagios-style check that also flags a long hold:" in docs/OPERATIONS.md. */
function documentedCheck(): string {
  const doc = readFileSync(join(root, 'docs/OPERATIONS.md'), 'utf8');
  const m = /A Nagios-style check that also flags a long hold:\n\n```sh\n([\s\S]*?)```/.exec(doc);
  assert.ok(m, 'the snippet is in docs/OPERATIONS.md');
  return m[1]!;
}

/** Runs the snippet with a `synhold` on PATH that acts in the test's namespace. */
function runCheck(ns: TestNetns): { status: number | null; stdout: string } {
  const bin = mkdtempSync(join(tmpdir(), 'synhold-hc-'));
  try {
    writeFileSync(join(bin, 'synhold'), `#!/bin/sh\nexec "${process.execPath}" "${CLI}" --netns "${ns.name}" "$@"\n`);
    chmodSync(join(bin, 'synhold'), 0o755);
    const r = spawnSync('sh', ['-c', documentedCheck()], { encoding: 'utf8', env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } });
    return { status: r.status, stdout: r.stdout.trim() };
  } finally {
    rmSync(bin, { recursive: true, force: true });
  }
}

test('health: status exits 3 not set up, 0 set up, 5 with the steering removed or a stale hold record; the documented check says 2 naming the problem', async () => {
  await withNetns(async (ns) => {
    try {
      assert.equal(synhold(['--netns', ns.name, 'status']).status, 3);
      assert.deepEqual(runCheck(ns), { status: 2, stdout: 'not set up' });
      // The always-on rule: the steering a flush of the raw table can remove between holds.
      const s = synhold(['--netns', ns.name, 'setup', '--port', '16000', '--backend', 'nfqueue', '--steering', 'always']);
      assert.equal(s.status, 0, s.stderr);
      assert.equal(synhold(['--netns', ns.name, 'status']).status, 0);
      assert.deepEqual(runCheck(ns), { status: 0, stdout: 'protected (nfqueue)' });

      // A manual hold whose watchdog is killed: the kernel lets go (the queue's socket closed), the record stays.
      const p = synhold(['--netns', ns.name, '--json', 'plug', '--max-hold', '30s']);
      assert.equal(p.status, 0, p.stderr);
      process.kill((JSON.parse(p.stdout) as { watchdogPid: number }).watchdogPid, 'SIGKILL');
      await until('the watchdog gone', () => !synhold(['--netns', ns.name, '--json', 'status']).stdout.includes('"held":true'), 5000);
      const stale = synhold(['--netns', ns.name, 'status']);
      assert.equal(stale.status, 5, stale.stdout);
      assert.match(stale.stdout, /PROBLEM: a hold record left by processes that are gone/);
      assert.match(runCheck(ns).stdout, /a hold record left by processes that are gone/);
      assert.equal(synhold(['--netns', ns.name, 'release']).status, 0);
      assert.equal(synhold(['--netns', ns.name, 'status']).status, 0, 'release cleared the record');

      // Someone flushes the table synhold's rule is in (iptables itself, not synhold).
      ns.exec('iptables', ['-t', 'raw', '-F']);
      const gone = synhold(['--netns', ns.name, 'status']);
      assert.equal(gone.status, 5);
      assert.match(gone.stdout, /PROBLEM: the NFQUEUE rule for port 16000 is gone/);
      const r = runCheck(ns);
      assert.equal(r.status, 2);
      assert.match(r.stdout, /the NFQUEUE rule for port 16000 is gone; run `synhold setup` again to repair/);
    } finally {
      synhold(['--netns', ns.name, 'teardown']);
    }
  });
});
