/**
 * The health check docs/OPERATIONS.md gives (`synhold status --json` read by a
 * few lines of node), run exactly as written there, against a real namespace on
 * this kernel: not set up, set up, and set up with the steering removed behind
 * synhold's back, where `synhold status` itself still exits 0 (it reports a
 * `problem`), which is why the check reads the JSON.
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

const root = fileURLToPath(new URL('../../../', import.meta.url));

/** The shell snippet under "A health check therefore reads the JSON:" in docs/OPERATIONS.md. */
function documentedCheck(): string {
  const doc = readFileSync(join(root, 'docs/OPERATIONS.md'), 'utf8');
  const m = /A health check therefore reads\s+the JSON:\n\n```sh\n([\s\S]*?)```/.exec(doc);
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

test('the documented health check: not set up -> 2; set up -> 0; steering removed -> 2 naming it, though status exits 0', async () => {
  await withNetns(async (ns) => {
    try {
      assert.deepEqual(runCheck(ns), { status: 2, stdout: 'not set up' });
      const s = synhold(['--netns', ns.name, 'setup', '--port', '16000', '--backend', 'nfqueue']);
      assert.equal(s.status, 0, s.stderr);
      assert.deepEqual(runCheck(ns), { status: 0, stdout: 'protected (nfqueue)' });
      // Someone flushes the table synhold's rule is in (iptables itself, not synhold).
      ns.exec('iptables', ['-t', 'raw', '-F']);
      assert.equal(synhold(['--netns', ns.name, 'status']).status, 0, 'status alone still says 0');
      const r = runCheck(ns);
      assert.equal(r.status, 2);
      assert.match(r.stdout, /the NFQUEUE rule for port 16000 is gone; run `synhold setup` again to repair/);
    } finally {
      synhold(['--netns', ns.name, 'teardown']);
    }
  });
});
