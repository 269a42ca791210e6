// Process bookkeeping for the bench's servers, by PID only.
//
// WHY /proc and not `pkill nginx`: the bench must never touch a process it did
// not start (a developer's own nginx, another test's HAProxy). Every server the
// bench starts gets a fresh temp dir and its command line names a file inside
// it, so "processes whose cmdline contains this temp dir" is exactly ours. Each
// PID is remembered together with its start time (field 22 of /proc/PID/stat),
// so a recycled PID is never mistaken for ours.
//
// Daemonised HAProxy processes are re-parented to PID 1; on this machine PID 1
// reaps them only eventually, so a dead one may linger as a zombie: state Z (or
// X) counts as gone.

import { readFileSync, readdirSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

export interface ProcInfo {
  pid: number;
  ppid: number;
  state: string;
  /** clock ticks since boot: with pid, identifies the process uniquely */
  startTime: number;
  comm: string;
}

export function readProc(pid: number): ProcInfo | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return null;
  }
  // comm is in parentheses and may itself contain spaces or ')': split at the last ')'.
  const close = stat.lastIndexOf(')');
  const comm = stat.slice(stat.indexOf('(') + 1, close);
  const f = stat.slice(close + 2).split(' ');
  // f[0] is field 3 (state); field N is f[N - 3].
  return { pid, ppid: Number(f[1]), state: f[0]!, startTime: Number(f[19]), comm };
}

export function readCmdline(pid: number): string[] | null {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, 'latin1');
    return raw.split('\0').filter((s) => s.length > 0);
  } catch {
    return null;
  }
}

/** A process we started (or found to be ours), pinned by its start time. */
export interface OwnedProc {
  pid: number;
  startTime: number;
}

/** Is this exact process (pid + start time) still running (not a zombie)? */
export function isRunning(p: OwnedProc): boolean {
  const info = readProc(p.pid);
  if (!info || info.startTime !== p.startTime) return false;
  return info.state !== 'Z' && info.state !== 'X';
}

export function own(pid: number): OwnedProc | null {
  const info = readProc(pid);
  return info ? { pid, startTime: info.startTime } : null;
}

/** Live processes whose command line contains `marker` (a unique temp dir path). */
export function findByCmdline(marker: string): OwnedProc[] {
  const out: OwnedProc[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    if (pid === process.pid) continue;
    const cmd = readCmdline(pid);
    if (!cmd || !cmd.some((a) => a.includes(marker))) continue;
    const p = own(pid);
    if (p && isRunning(p)) out.push(p);
  }
  return out;
}

/** Live children (any depth) of a process, by scanning /proc (ppid links). */
export function descendants(pid: number): OwnedProc[] {
  const children = new Map<number, number[]>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const info = readProc(Number(e));
    if (!info || info.state === 'Z') continue;
    const list = children.get(info.ppid) ?? [];
    list.push(info.pid);
    children.set(info.ppid, list);
  }
  const out: OwnedProc[] = [];
  const stack = [...(children.get(pid) ?? [])];
  for (let guard = 0; stack.length > 0 && guard < 100_000; guard++) {
    const c = stack.pop()!;
    const p = own(c);
    if (p) out.push(p);
    stack.push(...(children.get(c) ?? []));
  }
  return out;
}

function signal(p: OwnedProc, sig: NodeJS.Signals): void {
  if (!isRunning(p)) return;
  try {
    process.kill(p.pid, sig);
  } catch {
    /* already gone */
  }
}

/**
 * Stop these processes: `sig` first (default SIGTERM), SIGKILL after `graceMs`,
 * then verify. Returns the ones still running after all that (should be []).
 */
export async function killAll(procs: OwnedProc[], opts: { sig?: NodeJS.Signals; graceMs?: number; killWaitMs?: number } = {}): Promise<OwnedProc[]> {
  const graceMs = opts.graceMs ?? 3000;
  const killWaitMs = opts.killWaitMs ?? 2000;
  for (const p of procs) signal(p, opts.sig ?? 'SIGTERM');
  if (!(await waitGone(procs, graceMs))) {
    for (const p of procs) signal(p, 'SIGKILL');
    await waitGone(procs, killWaitMs);
  }
  return procs.filter(isRunning);
}

/** Poll until none of `procs` runs; false on timeout. */
export async function waitGone(procs: OwnedProc[], timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (!procs.some(isRunning)) return true;
    if (Date.now() >= end) return false;
    await sleep(10);
  }
}
