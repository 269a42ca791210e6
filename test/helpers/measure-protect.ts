/**
 * Measures what protect costs and buys, for docs/PROTECT.md: the same HAProxy
 * experiment (reload-experiment.ts) run as a no-reload baseline, unprotected,
 * protected releasing on the socket rule, and protected releasing only at the
 * reload command's exit. Runs in the current network namespace; prints JSON.
 *
 *   node measure-protect.js '{"backend":"plug","reloads":100,"concurrency":8}'
 */
import { release } from 'node:os';
import { runExperiment, type ExperimentResult } from './reload-experiment.js';

interface Args {
  backend: string;
  reloads: number;
  concurrency: number;
  intervalMs?: number;
  baselineMs?: number;
}

export interface Measurement {
  kernel: string;
  backend: string;
  concurrency: number;
  intervalMs: number;
  date: string;
  variants: { name: string; result: ExperimentResult }[];
}

async function main(): Promise<void> {
  const a = JSON.parse(process.argv[2] ?? '{}') as Args;
  const intervalMs = a.intervalMs ?? 100;
  const common = { intervalMs, concurrency: a.concurrency };
  const setupArgs = ['--backend', a.backend];
  const variants: { name: string; result: ExperimentResult }[] = [];
  variants.push({ name: 'baseline (no reloads)', result: await runExperiment({ ...common, protect: false, reloads: 0, durationMs: a.baselineMs ?? 10_000 }) });
  variants.push({ name: 'unprotected (-sf)', result: await runExperiment({ ...common, protect: false, reloads: a.reloads }) });
  variants.push({ name: 'protect, release on sockets', result: await runExperiment({ ...common, protect: true, setupArgs, reloads: a.reloads }) });
  variants.push({
    name: 'protect, release at exit',
    result: await runExperiment({ ...common, protect: true, setupArgs, protectArgs: ['--release-on', 'exit'], reloads: a.reloads }),
  });
  variants.push({ name: 'protect via synhold daemon', result: await runExperiment({ ...common, protect: true, setupArgs, daemon: true, reloads: a.reloads }) });
  const m: Measurement = { kernel: release(), backend: a.backend, concurrency: a.concurrency, intervalMs, date: new Date().toISOString(), variants };
  process.stdout.write(`${JSON.stringify(m)}\n`);
}

if (process.argv[1]?.endsWith('measure-protect.js')) {
  main().then(
    // After stdout has drained (see experiment-script's runAsScript).
    () => process.stdout.write('', () => process.exit(0)),
    (e: unknown) => {
      process.stderr.write(`measure-protect: ${(e as Error).stack}\n`);
      process.exit(1);
    },
  );
}
