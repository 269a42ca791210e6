// The kernel lab dies with the node process that started it, even when that process is killed
// with SIGKILL (no 'exit' hook runs then). CI once saw an outer timeout SIGKILL the test runner
// while its UML ran on, and run guest tests against the deleted checkout a minute later.
// Build: npx tsc -p /work/main; run: node --test dist/test/lab/parent-death.test.js
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { labAvailable } from '../../bench/src/lab/uml.js';

const UML_JS = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..', 'bench', 'src', 'lab', 'uml.js');

interface Proc {
  pid: number;
  ppid: number;
  pgrp: number;
  state: string;
  start: string;
  cmdline: string;
}

function processes(): Proc[] {
  const out: Proc[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // f[0] state, f[1] ppid, f[2] pgrp, f[19] starttime (guards against PID reuse)
      const cmdline = readFileSync(`/proc/${e}/cmdline`, 'utf8').replace(/\0/g, ' ');
      out.push({ pid: Number(e), state: f[0]!, ppid: Number(f[1]), pgrp: Number(f[2]), start: f[19]!, cmdline });
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

function descendants(root: number): Proc[] {
  const all = processes();
  const found = new Set([root]);
  for (let grew = true; grew;) {
    grew = false;
    for (const p of all) {
      if (!found.has(p.pid) && found.has(p.ppid)) {
        found.add(p.pid);
        grew = true;
      }
    }
  }
  return all.filter((p) => p.pid !== root && found.has(p.pid));
}

/** Still running: same PID and start time, and not a zombie (a zombie runs nothing; who reaps it is not ours to say). */
function alive(p: Proc, now: Proc[]): boolean {
  return now.some((q) => q.pid === p.pid && q.start === p.start && q.state !== 'Z');
}

async function until(what: string, fn: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) assert.fail(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

test('SIGKILL of the node process running a lab takes down UML and all its processes within a few seconds', { timeout: 120_000 }, async (t) => {
  const avail = labAvailable();
  assert.ok(avail.ok, `THE KERNEL LAB IS UNAVAILABLE (${avail.reason}); run scripts/install-deps.sh`);
  // Under /tmp: the guest has its own tmpfs there, so this also checks `share` once more.
  const dir = mkdtempSync(path.join(os.tmpdir(), 'synhold-orphan-'));
  let labDir: string | undefined;
  let child: ReturnType<typeof spawn> | undefined;
  try {
    // The guest writes a heartbeat every 200 ms for up to 2 minutes: if the lab survived its
    // parent, the beat would go on.
    const guest = `echo $$ > ${dir}/started; i=0; while :; do i=$((i+1)); echo $i > ${dir}/beat; sleep 0.2; done`;
    const script = `import { runInLab } from ${JSON.stringify(UML_JS)};
await runInLab({ command: ['sh', '-c', ${JSON.stringify(guest)}], cwd: ${JSON.stringify(dir)}, modules: [], timeoutMs: 120_000 });
console.log('lab returned');`;
    child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    await until('the guest command to start', () => existsSync(path.join(dir, 'beat')), 60_000);

    const procs = descendants(child.pid!);
    const uml = procs.find((p) => /linux\.uml|\bvmlinux\b/.test(p.cmdline) && /init=\S+\/init\.sh/.test(p.cmdline));
    assert.ok(uml, `no UML among the node process's descendants: ${JSON.stringify(procs.map((p) => p.cmdline))}`);
    labDir = path.dirname(/init=(\S+)\/init\.sh/.exec(uml.cmdline)![1]! + '/x');
    const groups = new Set(procs.map((p) => p.pgrp));
    t.diagnostic(
      `lab: ${procs.length} processes (${procs.filter((p) => p.cmdline.includes('linux.uml')).length} UML), process groups ${[...groups].join(',')}, lab directory ${labDir}`,
    );
    assert.ok(procs.length >= 2, 'UML runs helper processes');

    const killedAt = Date.now();
    process.kill(child.pid!, 'SIGKILL');
    await until(
      'every process of the lab to die',
      () => {
        const now = processes();
        return procs.every((p) => !alive(p, now)) && !now.some((q) => groups.has(q.pgrp) && q.state !== 'Z');
      },
      5_000,
    );
    const goneMs = Date.now() - killedAt;
    t.diagnostic(`all lab processes gone ${goneMs} ms after SIGKILL of their node parent`);
    assert.equal(out.includes('lab returned'), false, 'the killed node process did not finish its run');

    // Nothing uses the lab any more: the heartbeat stopped, and the guest never got to write its status.
    const beat = readFileSync(path.join(dir, 'beat'), 'utf8');
    const labMtime = statSync(labDir).mtimeMs;
    await sleep(2_000);
    assert.equal(readFileSync(path.join(dir, 'beat'), 'utf8'), beat, 'the guest command still runs after its lab was killed');
    assert.equal(existsSync(path.join(labDir, 'status')), false, 'the guest wrote its status after its parent died');
    assert.equal(statSync(labDir).mtimeMs, labMtime, 'something still writes to the lab directory');
  } finally {
    if (child?.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    // The killed process could not remove its lab directory; nothing else will.
    if (labDir && path.basename(labDir).startsWith('synhold-lab-')) rmSync(labDir, { recursive: true, force: true });
  }
});
