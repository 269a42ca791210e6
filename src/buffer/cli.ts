/**
 * `synhold buffer start|list|step|release`. `start` runs in the foreground and
 * owns the buffer (see buffer.ts for why the owner is a process of its own and
 * not the daemon); the others are one-shot clients of its control socket.
 * Errors propagate to src/cli/main.ts, which maps their codes to the exit
 * status (2 bad input, 3 no buffer, 4 busy, 1 anything else).
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError, parseDuration } from '../model/config.js';
import { buffer, type BufferBackend, type BufferReleased, type StepOptions } from './buffer.js';
import { listBuffer, releaseBuffer, stepBuffer, type BufferRef } from './client.js';
import { formatHeld } from './held.js';
import { describeFilter, type BufferDirection, type BufferHook, type BufferProto } from './filter.js';

export interface BufferGlobals {
  json: boolean;
  netns?: string;
}

export const BUFFER_USAGE = `usage: synhold [--netns NAME] buffer start [--proto tcp|udp] [--src A] [--dst A] [--sport P] [--dport P]
                     [--tcp-flags SET[/MASK]] [--direction one|both] [--dev DEV] [--at egress|ingress]
                     [--max-hold D] [--queue-num N] [--backend auto|plug|nfqueue]
       synhold [--netns NAME] buffer list|release [--queue-num N]
       synhold [--netns NAME] buffer step [--count N] [--drop] [--queue-num N]

start holds every packet matching the filter (at least one address or port) until release, Ctrl-C,
--max-hold (60s; at most 10m) or its own death; it stays in the foreground and prints one line once
holding. step releases the epoch (everything held when it runs), or the oldest --count N; --drop drops
instead (the oldest one by default; --count and --drop need nfqueue: a plug releases whole epochs). list
shows what is held (each packet with nfqueue, counts with plug); release lets everything go and ends it.`;

function parse<T extends ParseArgsConfig['options']>(args: string[], options: T, g: BufferGlobals) {
  let r;
  try {
    r = parseArgs({ args, options: { ...options, json: { type: 'boolean' }, netns: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true });
  } catch (e) {
    throw new ConfigError(`${(e as Error).message.replace(/\. To specify a positional.*$/, '')}`);
  }
  const v = r.values as { json?: boolean; netns?: string; help?: boolean };
  if (v.json) g.json = true;
  if (v.netns) g.netns = v.netns;
  return { values: r.values, help: v.help === true };
}

function out(g: BufferGlobals, value: unknown, human: string): void {
  process.stdout.write(g.json ? `${JSON.stringify(value)}\n` : `${human}\n`);
}

function queueOption(s: string | undefined): number | undefined {
  if (s === undefined) return undefined;
  if (!/^\d+$/.test(s)) throw new ConfigError(`--queue-num "${s}" is not in 0..65535`);
  return Number(s);
}

function refOf(g: BufferGlobals, queue: string | undefined): BufferRef {
  const ref: BufferRef = {};
  if (g.netns) ref.netns = g.netns;
  const q = queueOption(queue);
  if (q !== undefined) ref.queue = q;
  return ref;
}

const START_OPTIONS = {
  proto: { type: 'string' },
  src: { type: 'string' },
  dst: { type: 'string' },
  sport: { type: 'string' },
  dport: { type: 'string' },
  'tcp-flags': { type: 'string' },
  direction: { type: 'string' },
  dev: { type: 'string' },
  at: { type: 'string' },
  'max-hold': { type: 'string' },
  'queue-num': { type: 'string' },
  backend: { type: 'string' },
} as const;

function summary(r: BufferReleased): string {
  return `synhold buffer: released ${r.released} held packet(s) after ${(r.durationMs / 1000).toFixed(1)} s (${r.cause}, by the ${r.by}); steps released ${r.stepped}, dropped ${r.dropped}`;
}

async function cmdStart(args: string[], g: BufferGlobals): Promise<number> {
  const { values: v, help } = parse(args, START_OPTIONS, g);
  if (help) return usage();
  const maxHold = v['max-hold'] === undefined ? undefined : parseDuration(v['max-hold']);
  const b = await buffer({
    ...(g.netns ? { netns: g.netns } : {}),
    ...(v.proto !== undefined ? { proto: v.proto as BufferProto } : {}),
    ...(v.src !== undefined ? { src: v.src } : {}),
    ...(v.dst !== undefined ? { dst: v.dst } : {}),
    ...(v.sport !== undefined ? { sport: v.sport } : {}),
    ...(v.dport !== undefined ? { dport: v.dport } : {}),
    ...(v['tcp-flags'] !== undefined ? { tcpFlags: v['tcp-flags'] } : {}),
    ...(v.direction !== undefined ? { direction: v.direction as BufferDirection } : {}),
    ...(v.dev !== undefined ? { dev: v.dev } : {}),
    ...(v.at !== undefined ? { at: v.at as BufferHook } : {}),
    ...(maxHold !== undefined ? { maxHoldMs: maxHold } : {}),
    ...(v['queue-num'] !== undefined ? { queue: queueOption(v['queue-num'])! } : {}),
    ...(v.backend !== undefined ? { backend: v.backend as BufferBackend | 'auto' } : {}),
  });
  // Ctrl-C, kill, a closed terminal: let everything go before exiting. A second
  // signal exits at once: the watchdog, seeing its owner gone, releases then.
  let signalled = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (signalled) process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGHUP' ? 1 : 15));
    signalled = true;
    void b.release().catch(() => undefined);
  };
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  for (const s of signals) process.on(s, onSignal);
  out(
    g,
    {
      buffering: true,
      backend: b.backend,
      queue: b.queue,
      filter: describeFilter(b.filter),
      ownerPid: process.pid,
      watchdogPid: b.watchdogPid,
      socket: b.controlSocket,
      deadline: b.deadline,
    },
    `synhold buffer: holding ${describeFilter(b.filter)} (${b.backend}, queue ${b.queue}, owner pid ${process.pid}, watchdog pid ${b.watchdogPid}); ` +
      `synhold buffer list|step|release, or Ctrl-C`,
  );
  const r = await b.done;
  for (const s of signals) process.off(s, onSignal);
  process.stderr.write(`${summary(r)}\n`);
  return 0;
}

async function cmdList(args: string[], g: BufferGlobals): Promise<number> {
  const { values: v, help } = parse(args, { 'queue-num': { type: 'string' } }, g);
  if (help) return usage();
  const r = await listBuffer(refOf(g, v['queue-num']));
  const bytes = r.held.heldBytes !== undefined ? ` (${r.held.heldBytes} bytes)` : '';
  const head = `queue ${r.info.queue} (${r.info.backend}): ${r.info.filter}; ${r.held.heldPackets} held${bytes}`;
  out(g, r, [head, ...(r.held.packets ?? []).map(formatHeld)].join('\n'));
  return 0;
}

async function cmdStep(args: string[], g: BufferGlobals): Promise<number> {
  const { values: v, help } = parse(args, { 'queue-num': { type: 'string' }, count: { type: 'string' }, drop: { type: 'boolean' } }, g);
  if (help) return usage();
  const o: StepOptions = {};
  if (v.count !== undefined) {
    if (!/^[1-9]\d*$/.test(v.count)) throw new ConfigError(`--count "${v.count}" is not a positive integer`);
    o.count = Number(v.count);
  }
  if (v.drop) o.drop = true;
  const r = await stepBuffer(refOf(g, v['queue-num']), o);
  const what = o.drop ? `dropped ${r.dropped}` : `released ${r.released}`;
  out(g, r, `synhold buffer: ${what}${r.ids.length ? ` (ids ${r.ids[0]}..${r.ids[r.ids.length - 1]})` : ''}; ${r.held} still held`);
  return 0;
}

async function cmdRelease(args: string[], g: BufferGlobals): Promise<number> {
  const { values: v, help } = parse(args, { 'queue-num': { type: 'string' } }, g);
  if (help) return usage();
  const r = await releaseBuffer(refOf(g, v['queue-num']));
  out(g, r, 'stale' in r ? `synhold buffer: no owner was alive; removed ${r.rulesRemoved} rule(s) it left` : summary(r));
  return 0;
}

function usage(): number {
  process.stdout.write(`${BUFFER_USAGE}\n`);
  return 0;
}

const SUBCOMMANDS: Record<string, (args: string[], g: BufferGlobals) => Promise<number>> = {
  start: cmdStart,
  list: cmdList,
  step: cmdStep,
  release: cmdRelease,
};

/** `synhold buffer SUBCOMMAND ...`, called by src/cli/main.ts. */
export async function cmdBuffer(args: string[], g: BufferGlobals): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === '-h' || sub === '--help') return usage();
  const run = sub ? SUBCOMMANDS[sub] : undefined;
  if (!run) throw new ConfigError(sub ? `unknown subcommand "${sub}" (start, list, step, release)` : 'buffer needs a subcommand: start, list, step or release');
  return run(rest, g);
}
