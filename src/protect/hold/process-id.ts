/**
 * A process named by its pid and its start time (field 22 of /proc/PID/stat,
 * clock ticks since boot), so that a recorded pid reused by an unrelated
 * process is never mistaken for the one we recorded, nor signalled.
 */
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

export interface ProcessId {
  pid: number;
  /** Start time in clock ticks since boot, as a decimal string (it can exceed 2^53 in theory). */
  start: string;
}

interface ProcStat {
  start: string;
  /** Field 4: the parent's pid. */
  ppid: number;
  /** R, S, D, T (stopped), t (traced), Z (zombie), ... */
  state: string;
}

function readStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may itself contain spaces or ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state); field 22 (starttime) is fields[19].
  const state = fields[0];
  const start = fields[19];
  if (state === undefined || start === undefined) return undefined;
  return { state, start, ppid: Number(fields[1]) };
}

/** This pid's identity now, or undefined if no such process. */
export function processId(pid: number): ProcessId | undefined {
  const s = readStat(pid);
  return s ? { pid, start: s.start } : undefined;
}

/** The parent's pid of a live process, or undefined if no such process. */
export function parentPid(pid: number): number | undefined {
  return readStat(pid)?.ppid;
}

/** Whether that very process still exists (not a zombie, not a reuse of its pid). */
export function isAlive(id: ProcessId | undefined): boolean {
  if (!id) return false;
  const s = readStat(id.pid);
  return !!s && s.start === id.start && s.state !== 'Z' && s.state !== 'X';
}

/** Whether that very process is stopped (SIGSTOP, or stopped under a tracer). */
export function isStopped(id: ProcessId | undefined): boolean {
  if (!id) return false;
  const s = readStat(id.pid);
  return !!s && s.start === id.start && (s.state === 'T' || s.state === 't');
}

/** Signals that very process; false if it is gone (or its pid now names another). */
export function signalProcess(id: ProcessId, signal: NodeJS.Signals): boolean {
  if (!isAlive(id)) return false;
  try {
    process.kill(id.pid, signal);
    return true;
  } catch {
    return false;
  }
}

/**
 * Asks a hold's watchdog to release (SIGTERM: as `synhold release`; SIGUSR1: as
 * max-hold), with SIGCONT so a stopped one can act, and waits up to waitMs for
 * it to exit. Returns whether it was signalled (false: it was already gone).
 */
export async function signalWatchdog(id: ProcessId, signal: 'SIGTERM' | 'SIGUSR1', waitMs: number): Promise<boolean> {
  if (!signalProcess(id, signal)) return false;
  signalProcess(id, 'SIGCONT');
  const until = Date.now() + waitMs;
  while (isAlive(id) && Date.now() < until) await sleep(2);
  return true;
}
