/**
 * What `synhold protect -- true` costs next to Node.js's own start (`node -e 0`),
 * with and without the daemon, measured side by side in one run: the commands
 * take turns (A B C A B C ...) so that a drift in the machine's speed hits all
 * of them alike. Wall time from this process's clock; CPU time (user + system,
 * the command and all its children) from this process's children accounting
 * (/proc/self/stat cutime + cstime), which the kernel updates when each run is reaped.
 *
 *   node dist/bench/src/cost/protect-cost.js [--runs N] [--backend nfqueue|plug] [--json]
 *
 * It makes a network namespace of its own, sets synhold up there, and removes both.
 */
import { spawnSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { StateStore } from '../../../src/protect/state.js';

const CLI = fileURLToPath(new URL('../../../synhold.mjs', import.meta.url));
const TICK_MS = 1000 / 100; // USER_HZ

function childCpuMs(): number {
  const f = readFileSync('/proc/self/stat', 'utf8');
  const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
  // fields[13], fields[14]: cutime, cstime (fields 16 and 17 of the file).
  return (Number(fields[13]) + Number(fields[14])) * TICK_MS;
}

function run(argv: string[]): { wallMs: number; cpuMs: number } {
  const c0 = childCpuMs();
  const t0 = process.hrtime.bigint();
  const r = spawnSync(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`${argv.join(' ')} exited ${r.status}: ${String(r.stderr)}`);
  return { wallMs, cpuMs: childCpuMs() - c0 };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

export interface CostRow {
  name: string;
  command: string;
  wallMs: number;
  cpuMs: number;
  /** Median over runs of this run's wall / the baseline's wall in the same round. */
  wallRatio: number;
  /** Sum of CPU over the sum of the baseline's (CPU ticks are 10 ms: per-run ratios would be noise). */
  cpuRatio: number;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const runs = Number(args[args.indexOf('--runs') + 1] ?? 0) || 30;
  const backend = args.includes('--backend') ? args[args.indexOf('--backend') + 1]! : 'nfqueue';
  const ns = `synhold-cost-${process.pid}-${randomBytes(3).toString('hex')}`;
  spawnSync('ip', ['netns', 'add', ns]);
  spawnSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  let daemon: ReturnType<typeof spawn> | undefined;
  try {
    const s = spawnSync(process.execPath, [CLI, '--netns', ns, 'setup', '--port', '8080', '--backend', backend], { encoding: 'utf8' });
    if (s.status !== 0) throw new Error(`setup: ${s.stderr}`);
    const protect = [process.execPath, CLI, '--netns', ns, 'protect', '--', 'true'];
    const baseline = [process.execPath, '-e', '0'];
    const plain: { wallMs: number; cpuMs: number }[] = [];
    const base: { wallMs: number; cpuMs: number }[] = [];
    for (let i = 0; i < 3; i++) run(protect); // warm the page cache
    for (let i = 0; i < runs; i++) {
      base.push(run(baseline));
      plain.push(run(protect));
    }
    daemon = spawn(process.execPath, [CLI, '--netns', ns, 'daemon'], { stdio: 'ignore' });
    const sock = StateStore.for(ns).daemonSocketPath;
    for (let i = 0; i < 500 && !existsSync(sock); i++) await sleep(10);
    const viaDaemon: { wallMs: number; cpuMs: number }[] = [];
    const base2: { wallMs: number; cpuMs: number }[] = [];
    for (let i = 0; i < 3; i++) run(protect);
    for (let i = 0; i < runs; i++) {
      base2.push(run(baseline));
      viaDaemon.push(run(protect));
    }
    const row = (name: string, command: string, xs: typeof plain, bs: typeof base): CostRow => ({
      name,
      command,
      wallMs: median(xs.map((x) => x.wallMs)),
      cpuMs: xs.reduce((a, x) => a + x.cpuMs, 0) / xs.length,
      wallRatio: median(xs.map((x, i) => x.wallMs / bs[i]!.wallMs)),
      cpuRatio:
        xs.reduce((a, x) => a + x.cpuMs, 0) /
        Math.max(
          1,
          bs.reduce((a, x) => a + x.cpuMs, 0),
        ),
    });
    const rows = [
      row('node -e 0', 'node -e 0', base, base),
      row(`protect (${backend})`, 'synhold --netns NS protect -- true', plain, base),
      row(`protect (${backend}) through the daemon`, 'synhold --netns NS protect -- true  (synhold daemon running)', viaDaemon, base2),
    ];
    const kernel = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
    if (args.includes('--json')) process.stdout.write(`${JSON.stringify({ kernel, backend, runs, rows })}\n`);
    else
      for (const r of rows)
        process.stdout.write(
          `${r.name.padEnd(40)} wall ${r.wallMs.toFixed(1)} ms (x${r.wallRatio.toFixed(2)})  cpu ${r.cpuMs.toFixed(1)} ms (x${r.cpuRatio.toFixed(2)})\n`,
        );
  } finally {
    daemon?.kill('SIGTERM');
    await sleep(200);
    spawnSync(process.execPath, [CLI, '--netns', ns, 'teardown']);
    spawnSync('ip', ['netns', 'delete', ns]);
  }
}

await main();
