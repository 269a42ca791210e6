// Tests of the kernel lab (bench/src/lab/uml.ts): each test boots a User-Mode Linux guest.
// Build: npx tsc -p /work/main; run: node --test dist/test/lab/uml.test.js
//
// The lab is what lets synhold's plug path be tested at all on a kernel without sch_plug, so an
// unavailable lab is a FAILURE here, never a skip: a CI that silently skipped these would
// silently skip every plug test as well.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { labAvailable, labKernel, runInLab } from '../../bench/src/lab/uml.js';

const REPO = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..', '..');

function requireLab(): void {
  const avail = labAvailable();
  if (!avail.ok) {
    const message =
      '\n' +
      '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' +
      `!!! KERNEL LAB UNAVAILABLE: ${avail.reason}\n` +
      '!!! The plug tests need User-Mode Linux: run scripts/install-deps.sh\n' +
      '!!! (apt-get install user-mode-linux kmod iproute2, plus a C compiler on AMX CPUs).\n' +
      '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n';
    process.stderr.write(message);
    assert.fail(message);
  }
}

/** Explain a failed run fully: the assertion messages alone would hide the guest's stderr. */
function describe(r: unknown): string {
  return JSON.stringify(r, null, 2);
}

test('the lab is available', () => {
  requireLab();
  const k = labKernel();
  process.stderr.write(`# kernel lab: ${k.kernel} ${k.version} (${k.origin})${k.xstateShim ? ' with the xstate shim' : ''}\n`);
});

test('a plug qdisc can be added on lo inside the lab, and tc shows it', { timeout: 90_000 }, async () => {
  requireLab();
  const r = await runInLab({
    command: ['sh', '-c', 'tc qdisc add dev lo root handle 1: plug limit 10000 && tc -j qdisc show dev lo'],
    cwd: REPO,
    timeoutMs: 60_000,
  });
  assert.equal(r.exitCode, 0, describe(r));
  assert.equal(r.timedOut, false);
  const qdiscs = JSON.parse(r.stdout) as Array<{ kind: string; handle: string; root?: boolean }>;
  const root = qdiscs.find((q) => q.root);
  assert.ok(root, describe(r));
  assert.equal(root.kind, 'plug');
  assert.equal(root.handle, '1:');
  assert.ok(r.bootMs > 0 && r.bootMs <= r.durationMs, describe(r));
});

test('exit status, stdout, stderr, environment and cwd reach the caller', { timeout: 90_000 }, async () => {
  requireLab();
  // The cwd lives under /tmp, which the guest covers with its own tmpfs: the lab must mount it back.
  const dir = mkdtempSync(path.join(os.tmpdir(), 'synhold-labtest-'));
  try {
    writeFileSync(path.join(dir, 'input.txt'), 'from the host\n');
    const r = await runInLab({
      command: ['sh', '-c', 'echo "out:$WEIRD"; pwd; cat input.txt; echo oops >&2; exit 42'],
      cwd: dir,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', WEIRD: 'a b \'c\' "d" $e' },
      modules: [],
      timeoutMs: 60_000,
    });
    assert.equal(r.exitCode, 42, describe(r));
    assert.equal(r.signal, undefined);
    assert.equal(r.timedOut, false);
    assert.equal(r.stdout, `out:a b 'c' "d" $e\n${dir}\nfrom the host\n`);
    assert.equal(r.stderr, 'oops\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a command killed by a signal reports the signal and no exit code', { timeout: 90_000 }, async () => {
  requireLab();
  const r = await runInLab({ command: ['sh', '-c', 'kill -TERM $$'], cwd: REPO, modules: [], timeoutMs: 60_000 });
  assert.equal(r.exitCode, null, describe(r));
  assert.equal(r.signal, 'SIGTERM');
  assert.equal(r.timedOut, false);
});

test('a command that outlives the timeout is killed and reported as timed out', { timeout: 90_000 }, async () => {
  requireLab();
  const timeoutMs = 8_000; // boot takes well under a second, but CI machines are busy
  const started = Date.now();
  const r = await runInLab({ command: ['sh', '-c', 'echo started; exec sleep 600'], cwd: REPO, modules: [], timeoutMs });
  const wall = Date.now() - started;
  assert.equal(r.timedOut, true, describe(r));
  assert.equal(r.exitCode, null);
  // The guest kills the command at the deadline and still hands back what it printed.
  assert.equal(r.stdout, 'started\n', describe(r));
  assert.ok(wall >= timeoutMs - 1_000, `returned after ${wall} ms, before the ${timeoutMs} ms timeout`);
  assert.ok(wall < timeoutMs + 5_000, `returned ${wall} ms after start; the timeout was ${timeoutMs} ms`);
});

test("the guest's /run is its own tmpfs, not the host's", { timeout: 90_000 }, async () => {
  requireLab();
  const name = `synhold-labtest-${process.pid}-${Date.now()}`;
  const r = await runInLab({ command: ['sh', '-c', `echo x > /run/${name} && ls /run/${name}`], cwd: REPO, modules: [], timeoutMs: 60_000 });
  assert.equal(r.exitCode, 0, describe(r));
  assert.equal(existsSync(`/run/${name}`), false, 'a file the guest wrote to /run appeared on the host');
});

test('node runs inside the lab', { timeout: 90_000 }, async () => {
  requireLab();
  const r = await runInLab({ command: ['node', '-p', 'process.version'], cwd: REPO, modules: [], timeoutMs: 60_000 });
  assert.equal(r.exitCode, 0, describe(r));
  assert.equal(r.stdout.trim(), process.version);
});

test('iptables-legacy can add an NFQUEUE rule inside the lab (UML 6.x only)', { timeout: 90_000 }, async (t) => {
  requireLab();
  const k = labKernel();
  if (Number(k.version.split('.')[0]) >= 7) {
    // Debian unstable's UML 7.x is built without iptables-legacy and without nftables' ip family.
    t.skip(`UML ${k.version} has no iptables (CONFIG_NETFILTER_XTABLES_LEGACY and CONFIG_NF_TABLES_IPV4 unset)`);
    return;
  }
  const r = await runInLab({
    command: [
      'sh',
      '-c',
      'iptables-legacy -t raw -A PREROUTING -p tcp --syn --dport 8080 -j NFQUEUE --queue-num 7 --queue-bypass && iptables-legacy -t raw -S PREROUTING',
    ],
    cwd: REPO,
    timeoutMs: 60_000,
  });
  assert.equal(r.exitCode, 0, describe(r));
  assert.match(r.stdout, /-j NFQUEUE --queue-num 7 --queue-bypass/);
});
