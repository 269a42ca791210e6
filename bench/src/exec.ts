// Running a short command to completion with its output captured, bounded in
// time, for the bench's set-up steps (tc, nl-qdisc-add, sysctl, synhold setup,
// ip netns, ab). The reload itself does not go through here: servers.ts runs
// it with output to a file, because a daemonising HAProxy keeps inherited
// pipes open.
//
// A failure reads like execa's: what ran, exit code or signal, timed out or
// not, and the tail of stderr, so a skipped strategy's reason is actionable.

import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';

export interface ExecResult {
  argv: string[];
  /** null when killed by a signal, timed out, or never started */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** spawn error code (ENOENT, EACCES...) */
  error?: string;
  ms: number;
}

export interface ExecOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** SIGKILL (by PID) after this long; default 30 s */
  timeoutMs?: number;
  /** keep at most this many bytes of each stream (the tail); default 256 KiB */
  maxBytes?: number;
}

/** Run argv (no shell), never rejects. */
export function exec(argv: string[], o: ExecOptions = {}): Promise<ExecResult> {
  const maxBytes = o.maxBytes ?? 256 * 1024;
  return new Promise((resolve) => {
    const t0 = performance.now();
    let stdout = '';
    let stderr = '';
    let done = false;
    let timedOut = false;
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(o.env ? { env: o.env } : {}),
      ...(o.cwd ? { cwd: o.cwd } : {}),
    });
    const keep = (acc: string, d: Buffer): string => {
      const s = acc + d.toString('utf8');
      return s.length > maxBytes ? s.slice(-maxBytes) : s;
    };
    child.stdout!.on('data', (d: Buffer) => (stdout = keep(stdout, d)));
    child.stderr!.on('data', (d: Buffer) => (stderr = keep(stderr, d)));
    const finish = (code: number | null, signal: NodeJS.Signals | null, error?: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const r: ExecResult = { argv, code, signal, stdout, stderr, timedOut, ms: performance.now() - t0 };
      if (error !== undefined) r.error = error;
      resolve(r);
    };
    const timer = setTimeout(() => {
      timedOut = true;
      if (child.pid !== undefined) {
        try {
          process.kill(child.pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    }, o.timeoutMs ?? 30_000);
    child.on('error', (e: NodeJS.ErrnoException) => finish(null, null, e.code ?? e.message));
    // 'close', not 'exit': the output is complete only once the pipes closed.
    child.on('close', (code, signal) => finish(code, signal));
  });
}

/** The last non-empty line of a text ("" if none). */
export function lastLine(text: string): string {
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
  return lines[lines.length - 1] ?? '';
}

/** One line saying how a command failed: "`tc qdisc add ...` exited 2: Error: ..." */
export function describeFailure(r: ExecResult, maxChars = 400): string {
  const cmd = r.argv.join(' ');
  const how = r.error ? `could not run (${r.error})` : r.timedOut ? 'timed out' : r.signal ? `was killed by ${r.signal}` : `exited ${r.code}`;
  const tail = (r.stderr.trim() || r.stdout.trim()).split('\n').slice(-3).join(' | ');
  const msg = `\`${cmd}\` ${how}${tail ? `: ${tail}` : ''}`;
  return msg.length > maxChars ? `${msg.slice(0, maxChars - 3)}...` : msg;
}

/** Run argv and throw (with describeFailure's message) unless it exits 0. */
export async function execOk(argv: string[], o: ExecOptions = {}): Promise<ExecResult> {
  const r = await exec(argv, o);
  if (r.code !== 0) throw new Error(describeFailure(r));
  return r;
}
