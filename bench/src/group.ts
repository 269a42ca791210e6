// Runs the strategies of one kernel, one after the other, each in a fresh
// network namespace: create `synhold-bench-<where>-<strategy>-<hex>`, start
// the worker inside it (`ip netns exec NS node worker.js SPEC`), wait for it
// (bounded), stop whatever is still inside by PID, delete the namespace.
//
// The same code runs on the host (called by `synhold bench`) and inside the
// kernel lab (through lab-main.ts): the only difference between the two rows
// sets is the kernel underneath.

import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, rmSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpus, release } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { addNetns, deleteNetns } from './netns.js';
import { emitProgress, readJsonFile, writeJsonFile, type GroupSpec, type WorkerResult, type WorkerSpec } from './protocol.js';
import { isRunning, own } from './procs.js';

/** Time a worker gets beyond its load cap: servers, set-up, warm-up, ab, clean-up. */
export const WORKER_OVERHEAD_MS = 4 * 60_000;

const WORKER_JS = fileURLToPath(new URL('./worker.js', import.meta.url));

function tail(path: string, max = 1500): string {
  try {
    const s = readFileSync(path, 'utf8').trim();
    return s.length > max ? `...${s.slice(-max)}` : s;
  } catch {
    return '';
  }
}

function errorResult(w: WorkerSpec, error: string): WorkerResult {
  return { strategy: w.strategy, where: w.where, kernel: release(), cpus: cpus().length, netns: w.netns, error, notes: [], elapsedMs: 0 };
}

/** Run one worker in its own namespace; always leaves a result file. */
async function runWorker(g: GroupSpec, w: WorkerSpec, signal?: AbortSignal): Promise<void> {
  const specFile = join(g.workDir, `spec-${w.where}-${w.strategy}.json`);
  const logFile = join(g.workDir, `worker-${w.where}-${w.strategy}.log`);
  writeJsonFile(specFile, w);
  if (w.runDir) mkdirSync(w.runDir, { recursive: true });
  try {
    await addNetns(w.netns);
  } catch (e) {
    writeJsonFile(w.resultFile, errorResult(w, `could not create network namespace ${w.netns}: ${(e as Error).message}`));
    return;
  }
  const timeoutMs = w.load.capMs + WORKER_OVERHEAD_MS;
  let ended = '';
  try {
    const fd = openSync(logFile, 'a');
    const child = spawn('ip', ['netns', 'exec', w.netns, process.execPath, WORKER_JS, specFile], { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    const proc = child.pid !== undefined ? own(child.pid) : null;
    const exited = new Promise<string>((resolve) => {
      child.once('error', (e) => resolve(`could not start the worker: ${e.message}`));
      child.once('exit', (code, sig) => resolve(code === 0 ? '' : sig ? `the worker was killed by ${sig}` : `the worker exited ${code}`));
    });
    const stop = async (why: string): Promise<string> => {
      // SIGTERM: the worker exits through process.exit and kills its servers.
      if (proc && isRunning(proc)) process.kill(proc.pid, 'SIGTERM');
      const r = await Promise.race([exited, sleep(8000).then(() => null)]);
      if (r === null && proc && isRunning(proc)) process.kill(proc.pid, 'SIGKILL');
      await exited;
      return why;
    };
    const timer = new Promise<string>((resolve) => {
      const t = setTimeout(() => resolve('timeout'), timeoutMs);
      void exited.then(() => clearTimeout(t));
    });
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<string>((resolve) => {
      if (!signal) return;
      if (signal.aborted) resolve('aborted');
      onAbort = () => resolve('aborted');
      signal.addEventListener('abort', onAbort, { once: true });
    });
    const first = await Promise.race([exited.then((r) => `exit:${r}`), timer, aborted]);
    if (onAbort) signal?.removeEventListener('abort', onAbort);
    if (first === 'timeout') ended = await stop(`the worker did not finish within ${Math.round(timeoutMs / 1000)} s and was stopped`);
    else if (first === 'aborted') ended = await stop('interrupted');
    else ended = first.slice(5);
  } finally {
    const stray = await deleteNetns(w.netns).catch((e: Error) => {
      ended += `; deleting ${w.netns}: ${e.message}`;
      return [] as number[];
    });
    if (stray.length > 0) ended += `${ended ? '; ' : ''}stopped ${stray.length} process(es) left in ${w.netns}`;
    if (w.runDir) rmSync(w.runDir, { recursive: true, force: true });
  }
  const r = readJsonFile<WorkerResult>(w.resultFile);
  if (!r) {
    writeJsonFile(w.resultFile, errorResult(w, `${ended || 'the worker wrote no result'}: ${tail(logFile)}`));
    emitProgress(g.progressFile, { t: 'done', where: w.where, strategy: w.strategy, error: ended || 'no result' });
  } else if (ended && ended !== 'interrupted' && !r.error) {
    // A result was written, but something after it went wrong (stray processes...).
    r.notes.push(ended);
    writeJsonFile(w.resultFile, r);
  }
}

/** Run every worker of the group in order. A failing strategy does not stop the others. */
export async function runGroup(g: GroupSpec, o: { signal?: AbortSignal } = {}): Promise<void> {
  for (const w of g.workers) {
    if (o.signal?.aborted) {
      writeJsonFile(w.resultFile, errorResult(w, 'interrupted before it started'));
      continue;
    }
    await runWorker(g, w, o.signal);
  }
}

/** Read the results of a group (a missing one becomes an error result). */
export function readGroupResults(g: GroupSpec, why = 'no result'): WorkerResult[] {
  return g.workers.map((w) => (existsSync(w.resultFile) ? readJsonFile<WorkerResult>(w.resultFile) : undefined) ?? errorResult(w, why));
}
