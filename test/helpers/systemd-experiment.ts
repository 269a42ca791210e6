/**
 * Load against a server inside a booted container (test/helpers/nspawn.ts) while
 * a command is run there N times: the reload or restart under test
 * (`systemctl reload haproxy`, `synhold protect -- systemctl restart pong`).
 * Runs in the container's network namespace (the test starts it under
 * `nsenter --net=/proc/LEADER/ns/net`); each command goes through
 * `nsenter -t LEADER -a`. Prints one JSON document. Bounded: N commands, each
 * killed after commandTimeoutMs, the load stopped when they are done.
 *
 *   node systemd-experiment.js '{"leader":123,"port":16000,"command":"systemctl reload haproxy","count":20,"intervalMs":300,"concurrency":10}'
 */
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { summarizeMs } from '../../bench/src/histogram.js';
import { closedLoad, runAsScript } from './experiment-script.js';

export interface SystemdExperiment {
  leader: number;
  port: number;
  /** A shell line run inside the container, count times, start to start intervalMs apart. */
  command: string;
  count: number;
  intervalMs: number;
  concurrency: number;
  commandTimeoutMs?: number;
  /** Load before the first command and after the last, ms. */
  marginMs?: number;
}

export interface SystemdExperimentResult {
  requests: number;
  failed: number;
  outcomes: Record<string, number>;
  details: Record<string, number>;
  latencyMs: ReturnType<typeof summarizeMs>;
  /** Each command's exit status and wall time. */
  commands: { status: number | null; ms: number; stderr: string }[];
}

function inContainer(leader: number, script: string, timeoutMs: number): Promise<{ status: number | null; ms: number; stderr: string }> {
  const t0 = performance.now();
  const c = spawn('nsenter', ['-t', String(leader), '-a', '/bin/sh', '-c', script], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  c.stderr.on('data', (d) => (stderr += d));
  const t = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve) =>
    c.on('close', (status) => {
      clearTimeout(t);
      resolve({ status, ms: Math.round((performance.now() - t0) * 10) / 10, stderr: stderr.slice(-2000) });
    }),
  );
}

export async function runSystemdExperiment(o: SystemdExperiment): Promise<SystemdExperimentResult> {
  const abort = new AbortController();
  const timeout = o.commandTimeoutMs ?? 20_000;
  const margin = o.marginMs ?? 500;
  const bound = margin * 2 + o.count * (o.intervalMs + timeout) + 10_000;
  const load = closedLoad({ port: o.port, concurrency: o.concurrency, endsAt: Date.now() + bound, graceMs: 15_000, signal: abort.signal });
  const commands: SystemdExperimentResult['commands'] = [];
  try {
    await sleep(margin);
    for (let i = 0; i < o.count; i++) {
      const start = performance.now();
      commands.push(await inContainer(o.leader, o.command, timeout));
      const rest = o.intervalMs - (performance.now() - start);
      if (rest > 0) await sleep(rest);
    }
    await sleep(margin);
  } finally {
    abort.abort();
  }
  const l = await load;
  return {
    requests: l.requests,
    failed: l.failed,
    outcomes: l.outcomes,
    details: l.details,
    latencyMs: summarizeMs(l.latency),
    commands,
  };
}

runAsScript(import.meta.url, runSystemdExperiment);
