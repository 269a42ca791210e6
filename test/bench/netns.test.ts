// The bench's namespaces on this kernel: created with lo up, emptied by PID and
// deleted; the kernel probe agrees with tc itself; a strategy refuses to run
// outside the namespace made for it. Oracles: `ip netns list`, `ip -n NS -j
// link`, /proc, and tc's own exit status.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { addNetns, deleteNetns, benchNetnsName, inNetns, netnsPids, probeKernelFeatures } from '../../bench/src/netns.js';
import { runStrategy } from '../../bench/src/run-strategy.js';

const namespaces = (): string[] =>
  execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter(Boolean);

test('addNetns: lo is up; deleteNetns stops what is still inside, by PID, then deletes it', async () => {
  const name = benchNetnsName('test');
  await addNetns(name);
  try {
    assert.ok(namespaces().includes(name));
    const lo = JSON.parse(execFileSync('ip', ['-n', name, '-j', 'link', 'show', 'lo'], { encoding: 'utf8' })) as Array<{ flags: string[] }>;
    assert.ok(lo[0]!.flags.includes('UP'), JSON.stringify(lo));
    const child = spawn('ip', ['netns', 'exec', name, 'sleep', '60'], { stdio: 'ignore' });
    const pid = child.pid!;
    for (let i = 0; i < 100 && !(await netnsPids(name)).includes(pid); i++) await sleep(20);
    assert.ok((await netnsPids(name)).includes(pid), 'the sleeper is inside');
    const stopped = await deleteNetns(name);
    assert.deepEqual(stopped, [pid]);
    await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(null) : child.once('exit', r)));
    assert.equal(child.signalCode, 'SIGTERM');
    assert.ok(!namespaces().includes(name), 'deleted');
  } finally {
    spawnSync('ip', ['netns', 'delete', name]);
  }
});

test('only bench namespaces are created or deleted', async () => {
  await assert.rejects(addNetns('someone-elses'), /synhold-bench-/);
  await assert.rejects(deleteNetns('someone-elses'), /not a bench namespace/);
});

test('inNetns: false here, true inside the named namespace', async () => {
  const name = benchNetnsName('test');
  await addNetns(name);
  try {
    assert.equal(inNetns(name), false);
    const mod = fileURLToPath(new URL('../../bench/src/netns.js', import.meta.url));
    const r = spawnSync('ip', [
      'netns',
      'exec',
      name,
      process.execPath,
      '--input-type=module',
      '-e',
      `import { inNetns } from ${JSON.stringify(mod)}; process.exit(inNetns(${JSON.stringify(name)}) ? 0 : 1);`,
    ]);
    assert.equal(r.status, 0, r.stderr?.toString());
  } finally {
    await deleteNetns(name);
  }
});

test("kernel probe agrees with tc's own answer, and leaves no namespace behind", async () => {
  const before = namespaces().filter((n) => n.startsWith('synhold-bench-probe'));
  const probe = await probeKernelFeatures();
  assert.deepEqual(
    namespaces().filter((n) => n.startsWith('synhold-bench-probe')),
    before,
  );
  // Oracle: tc itself, in a namespace of ours, root plug (no prio needed).
  const name = benchNetnsName('test');
  await addNetns(name);
  try {
    const plug = spawnSync('tc', ['-n', name, 'qdisc', 'add', 'dev', 'lo', 'root', 'handle', '1:', 'plug', 'limit', '1000'], { encoding: 'utf8' });
    spawnSync('tc', ['-n', name, 'qdisc', 'del', 'dev', 'lo', 'root']);
    const prio = spawnSync('tc', ['-n', name, 'qdisc', 'add', 'dev', 'lo', 'root', 'handle', '1:', 'prio', 'bands', '4'], { encoding: 'utf8' });
    assert.equal(probe.sch_plug.ok, plug.status === 0, `${probe.sch_plug.detail} / tc: ${plug.stderr}`);
    assert.equal(probe.sch_prio.ok, prio.status === 0, `${probe.sch_prio.detail} / tc: ${prio.stderr}`);
    if (!probe.sch_plug.ok) assert.match(probe.sch_plug.detail, /kind is unknown/);
  } finally {
    await deleteNetns(name);
  }
});

test("a strategy refuses to run outside the namespace made for it (fixed ports, lo's qdiscs)", async () => {
  const r = await runStrategy({
    strategy: 'none',
    where: 'host',
    intervalMs: 100,
    load: { concurrency: 1, durationMs: 100, capMs: 100, requestTimeoutMs: 1000, warmupRequests: 1 },
    progressFile: '/dev/null',
    resultFile: '/dev/null',
    netns: 'synhold-bench-does-not-exist',
  });
  assert.match(r.error ?? '', /refusing to run outside the namespace/);
  assert.equal(r.load, undefined);
});
