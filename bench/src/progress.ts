// What `synhold bench` shows while it runs, on stderr: on a terminal, one bar
// redrawn in place for the strategy running now, and a line per strategy when
// it ends; otherwise (CI logs, pipes) plain lines, at most one per strategy
// every 5 s, so a log stays readable.
//
// The numbers come from the workers' progress files (protocol.ts), tailed here:
// the same for the host's namespaces and for the kernel lab.

import { closeSync, openSync, readSync, fstatSync } from 'node:fs';
import type { ProgressEvent, Where, LoadPlan } from './protocol.js';

/** Reads the lines appended to a file since the last call. */
export class FileTail {
  private offset = 0;
  private partial = '';
  constructor(readonly path: string) {}

  lines(): string[] {
    let fd: number;
    try {
      fd = openSync(this.path, 'r');
    } catch {
      return [];
    }
    try {
      const size = fstatSync(fd).size;
      if (size <= this.offset) return [];
      const buf = Buffer.alloc(size - this.offset);
      const n = readSync(fd, buf, 0, buf.length, this.offset);
      this.offset += n;
      const text = this.partial + buf.subarray(0, n).toString('utf8');
      const parts = text.split('\n');
      this.partial = parts.pop() ?? '';
      return parts.filter((l) => l.length > 0);
    } finally {
      closeSync(fd);
    }
  }

  events(): ProgressEvent[] {
    const out: ProgressEvent[] = [];
    for (const l of this.lines()) {
      try {
        out.push(JSON.parse(l) as ProgressEvent);
      } catch {
        /* a torn line: ignore */
      }
    }
    return out;
  }
}

interface Running {
  where: Where;
  strategy: string;
  plan?: LoadPlan;
  reloadsExpected: boolean;
  phase: string;
  startedAt: number;
  elapsedMs: number;
  requests: number;
  failed: number;
  reloads: number;
  lastPlainAt: number;
}

const fmtCount = (n: number): string => (n >= 10_000 ? `${(n / 1000).toFixed(n >= 100_000 ? 0 : 1)}k` : String(n));

/** Fraction of the load done, from the plan's bounds (0..1). */
export function fractionDone(r: { plan?: LoadPlan; elapsedMs: number; requests: number; reloads: number; reloadsExpected: boolean }): number {
  const p = r.plan;
  if (!p) return 0;
  let f = p.requests !== undefined ? r.requests / p.requests : r.elapsedMs / (p.durationMs ?? p.capMs);
  if (p.minReloads && r.reloadsExpected) f = Math.max(Math.min(f, r.reloads / p.minReloads), r.elapsedMs / p.capMs);
  return Math.max(0, Math.min(1, f));
}

export function bar(fraction: number, width = 24): string {
  const n = Math.round(Math.max(0, Math.min(1, fraction)) * width);
  return `[${'#'.repeat(n)}${'.'.repeat(width - n)}]`;
}

export interface ProgressSink {
  write(s: string): unknown;
}

export class ProgressView {
  private cur: Running | undefined;
  private lineShown = false;
  constructor(
    private readonly out: ProgressSink,
    private readonly tty: boolean,
    private readonly now: () => number = Date.now,
  ) {}

  /** A line of its own (e.g. "probing the kernel"). */
  note(line: string): void {
    this.clearLine();
    this.out.write(`bench: ${line}\n`);
    this.redraw();
  }

  event(e: ProgressEvent): void {
    switch (e.t) {
      case 'start':
        this.cur = {
          where: e.where,
          strategy: e.strategy,
          plan: e.plan,
          reloadsExpected: e.reloads,
          phase: 'starting',
          startedAt: this.now(),
          elapsedMs: 0,
          requests: 0,
          failed: 0,
          reloads: 0,
          lastPlainAt: this.now(),
        };
        if (!this.tty) this.out.write(`bench: ${e.where} ${e.strategy}: started (kernel ${e.kernel})\n`);
        break;
      case 'phase':
        if (this.cur && this.cur.strategy === e.strategy && this.cur.where === e.where) this.cur.phase = e.phase;
        break;
      case 'load':
        if (!this.cur || this.cur.strategy !== e.strategy || this.cur.where !== e.where) break;
        Object.assign(this.cur, { elapsedMs: e.elapsedMs, requests: e.requests, failed: e.failed, reloads: e.reloads, phase: 'load' });
        if (!this.tty && this.now() - this.cur.lastPlainAt >= 5000) {
          this.cur.lastPlainAt = this.now();
          this.out.write(`bench: ${this.status(this.cur)}\n`);
        }
        break;
      case 'done': {
        this.clearLine();
        const what = e.skipped
          ? `skipped: ${e.skipped}`
          : e.error
            ? `FAILED: ${e.error}`
            : `${e.requests ?? 0} requests, ${e.failed ?? 0} failed, ${e.reloads ?? 0} reloads`;
        this.out.write(`bench: ${e.where} ${e.strategy}: ${what}\n`);
        this.cur = undefined;
        break;
      }
    }
    this.redraw();
  }

  private status(r: Running): string {
    const f = fractionDone(r);
    return (
      `${r.where} ${r.strategy}: ${r.phase === 'load' ? `${bar(f)} ${Math.floor(f * 100)}%` : r.phase}` +
      ` ${fmtCount(r.requests)} req, ${r.failed} failed${r.reloadsExpected ? `, ${r.reloads} reloads` : ''}, ${Math.round(r.elapsedMs / 1000)} s`
    );
  }

  private clearLine(): void {
    if (this.tty && this.lineShown) {
      this.out.write('\r\x1b[K');
      this.lineShown = false;
    }
  }

  private redraw(): void {
    if (!this.tty || !this.cur) return;
    this.out.write(`\r\x1b[K${this.status(this.cur)}`);
    this.lineShown = true;
  }

  /** Call when done: leaves the cursor on a fresh line. */
  close(): void {
    this.clearLine();
  }
}
