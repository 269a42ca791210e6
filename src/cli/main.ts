#!/usr/bin/env node
/**
 * The synhold command line. Results go to stdout (human text, or one JSON
 * document with --json); diagnostics go to stderr, one line per problem.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { failpoint } from '../protect/hold/failpoint.js';
import { ERROR_CODES, EXIT, isErrorCode, NotSetUpError, type KernelFeature, type SynholdError } from '../model/errors.js';
import { requirePrograms } from '../host/programs.js';
import { resolveNetns } from '../host/netns.js';
import { ConfigError, MAX_DURATION_MS, normalizeConfig, parseAddress, parseDuration, parsePort, parseSize, type SetupConfig } from '../model/config.js';
import type { StatusReport } from '../protect/setup.js';
import { DEFAULT_MAX_HOLD_MS, EXIT_FAILED, protect, signalNumber } from '../protect/protect.js';
import { StateStore } from '../protect/state.js';
import { appendFileSync, existsSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { packageRoot, packageVersion } from '../host/package-root.js';
import { importEsm, saveCodeCache } from './code-cache.js';

/** Exit codes of every command but protect (which follows timeout(1): see protect.ts). */

const USAGE = `usage: synhold [--netns NS] COMMAND [OPTIONS]

Hold new TCP connections while a server reloads, so none is refused or reset.

commands:
  setup --port P [--port P ...] [--address A ...] [--source A ...] [--dev DEV]
        [--direction egress|ingress] [--limit BYTES] [--backend auto|plug|nfqueue|drop]
        [--queue-num N] [--migrate-req on|off] [--egress-topology auto|prio|clsact]
        [--steering auto|always|while-holding]
                                        install the steering (idempotent, atomic); migrate-req
                                        also sets net.ipv4.tcp_migrate_req=1 (restored by teardown);
                                        egress-topology (plug): clsact, DEV's root untouched and SYNs
                                        redirected to an IFB; prio, the seed's root on DEV; auto
                                        (default): clsact, or prio where DEV or the kernel cannot;
                                        steering (nfqueue): always, an iptables rule from setup to
                                        teardown, or while-holding, an nf_tables table that exists
                                        only during a hold (no cost between holds); auto (default):
                                        while-holding unless another NFQUEUE user is bound here;
                                        (plug, clsact or ingress) while-holding (auto): the redirect
                                        filters only during a hold; always: from setup to teardown
  plug [--max-hold D]                   start holding by hand (released by 'release' or max-hold)
  release [--wait D]                    stop holding and let held connections through (through the hold's
                                        watchdog; after --wait (3s) for a stuck owner, directly)
  protect [--timeout D] [--max-hold D] [--ready tcp:HOST:PORT] [--lock-wait D]
          [--release-on sockets|exit|swap] [--settle-wait D] [--priority realtime|normal]
          [--stop-old SIGNAL [--start-guard on|off]] [--report FILE] [--verbose] -- CMD [ARGS...]
                                        hold while CMD runs; release as soon as the reload is done
                                        (sockets: new listener up and old gone; exit: CMD exited;
                                        swap: only the socket swap, for a CMD that returns before the
                                        reload is done: kill -USR2, systemctl reload, nginx -s reload);
                                        after CMD exits, an old listener still open for
                                        --settle-wait (2s) is taken as not closing;
                                        --stop-old SIGNAL: CMD starts the new server beside the old
                                        one (haproxy ... -D without -sf); once it listens, protect
                                        holds, sends SIGNAL (USR1: HAProxy's soft stop) to the
                                        processes that held the old listeners, and releases when
                                        they close: the hold covers the stop, not the start-up;
                                        --start-guard on (default): meanwhile new connections go
                                        to the old listener (a SO_REUSEPORT steer), and SIGNAL
                                        waits until the new server polls its listeners;
                                        while holding, protect runs at real-time priority
                                        (SCHED_FIFO 1; CMD stays normal) unless --priority normal
                                        or it may run on one CPU only;
                                        --report appends the --json result to FILE as one line
  status [--json]                       setup, backend, held or not, counters, last hold;
                                        exit 0 healthy, 3 not set up, 5 set up with a problem
  daemon [--metrics HOST:PORT]          hold for protect without a process per reload; serve /metrics
  teardown                              remove everything setup created
  bench [--strategies LIST] [--quick|--full] ...  the seed's experiment, every reload strategy (bench --help)
  buffer start|list|step|release [FILTER] ...   hold any flow's packets, release them epoch by epoch (buffer --help)

global options:
  --netns NS      act inside a network namespace; protect runs CMD there too. NS is a name
                  (as ip -n NAME: /run/netns/NAME), a path (/run/netns/X, /proc/PID/ns/net),
                  or pid:PID (the namespace of process PID; a bare number is a name)
  --json          machine-readable output on stdout
  -h, --help      this text;  --version

exit status: 0 ok, 1 failed, 2 bad usage or input, 3 not set up, 4 busy, 5 unhealthy (status);
Maximums: --max-hold, --lock-wait, --settle-wait 10m; --timeout 24h.
protect: CMD's status, 124 timeout, 125 synhold failed, 126 cannot run CMD, 127 CMD not found, 128+N signal N.
Durations: 500ms, 2s, 1m. Sizes: 65536, 64k, 1m.`;

class UsageError extends ConfigError {}

function parse<T extends ParseArgsConfig['options']>(args: string[], options: T) {
  try {
    return parseArgs({
      args,
      options: { ...options, json: { type: 'boolean' }, netns: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      allowPositionals: false,
      strict: true,
    });
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/\. To specify a positional.*$/, ''));
  }
}

interface Globals {
  json: boolean;
  netns?: string;
}

/**
 * Writes to fd 1 or 2 directly. process.stdout/stderr on a pipe or socket (a
 * supervisor's, a test's, the journal's) would load node:net just to print the
 * one line protect prints per reload. A non-blocking descriptor that is full
 * is waited on (1 ms at a time), as Node's synchronous stdio does.
 */
function write(fd: 1 | 2, text: string): void {
  let buf = Buffer.from(text);
  const pause = new Int32Array(new SharedArrayBuffer(4));
  while (buf.length > 0) {
    try {
      buf = buf.subarray(writeSync(fd, buf));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      Atomics.wait(pause, 0, 0, 1);
    }
  }
}

function out(g: Globals, value: unknown, human: string): void {
  write(1, g.json ? `${JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? Number(v) : v), 2)}\n` : `${human}\n`);
}

function scopeOf(g: Globals): { netns?: string } {
  return g.netns ? { netns: g.netns } : {};
}

async function cmdSetup(args: string[], g: Globals): Promise<number> {
  const { values: v } = parse(args, {
    port: { type: 'string', multiple: true },
    address: { type: 'string', multiple: true },
    source: { type: 'string', multiple: true },
    dev: { type: 'string' },
    direction: { type: 'string' },
    limit: { type: 'string' },
    backend: { type: 'string' },
    'queue-num': { type: 'string' },
    'migrate-req': { type: 'string' },
    'egress-topology': { type: 'string' },
    steering: { type: 'string' },
  });
  mergeGlobals(g, v);
  const mr = v['migrate-req'] ?? 'on';
  if (mr !== 'on' && mr !== 'off') throw new UsageError(`--migrate-req must be on or off, not "${mr}"`);
  const cfg: SetupConfig = normalizeConfig({
    migrateReq: mr === 'on',
    ports: (v.port ?? []).map((p) => parsePort(p)),
    addresses: (v.address ?? []).map(parseAddress),
    sources: (v.source ?? []).map(parseAddress),
    dev: v.dev,
    ...(v.direction ? { direction: v.direction as SetupConfig['direction'] } : {}),
    ...(v['egress-topology'] ? { egressTopology: v['egress-topology'] as SetupConfig['egressTopology'] } : {}),
    ...(v.steering ? { steering: v.steering as SetupConfig['steering'] } : {}),
    ...(v.limit ? { limit: parseSize(v.limit) } : {}),
    ...(v.backend ? { backend: v.backend as SetupConfig['backend'] } : {}),
    ...(v['queue-num'] ? { queueNum: Number(v['queue-num']) } : {}),
  });
  const { setup, steeringOf, topologyOf } = await import('../protect/setup.js');
  const r = await setup(cfg, scopeOf(g));
  const what = `${cfg.ports.join(',')} on dev ${cfg.dev} (${cfg.direction})`;
  const steering = steeringOf(r.record);
  const topology = topologyOf(r.record);
  out(
    g,
    {
      action: r.action,
      backend: r.backend,
      backendReason: r.backendReason,
      config: r.record.config,
      ...(topology ? { topology } : {}),
      ...(steering ? { steering } : {}),
    },
    `synhold: ${r.action}: holding backend ${r.backend} for tcp port ${what} - ${r.backendReason}` +
      (topology ? `; topology ${topology.installed}${topology.reason ? ` (${topology.reason})` : ''}` : '') +
      (steering ? `; steering ${steering.installed}${steering.reason ? ` (${steering.reason})` : ''}` : ''),
  );
  return EXIT.ok;
}

function mergeGlobals(g: Globals, v: { json?: boolean | undefined; netns?: string | undefined; help?: boolean | undefined }): void {
  if (v.json) g.json = true;
  if (v.netns) g.netns = resolveNetns(v.netns).path;
  if (v.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(EXIT.ok);
  }
}

/** A duration option within its documented maximum (model/config.ts MAX_DURATION_MS). */
function durationOption(flag: string, value: string | undefined, key: keyof typeof MAX_DURATION_MS, fallback: number): number {
  if (value === undefined) return fallback;
  const ms = parseDuration(value);
  const max = MAX_DURATION_MS[key];
  if (ms > max) throw new UsageError(`${flag} ${value} is over its maximum of ${max / 1000} s`);
  return ms;
}

async function cmdPlug(args: string[], g: Globals): Promise<number> {
  const { values: v } = parse(args, { 'max-hold': { type: 'string' }, 'lock-wait': { type: 'string' } });
  mergeGlobals(g, v);
  const maxHoldMs = durationOption('--max-hold', v['max-hold'], 'maxHold', DEFAULT_MAX_HOLD_MS);
  const lockWaitMs = durationOption('--lock-wait', v['lock-wait'], 'lockWait', 0);
  // The hold outlives this command: its watchdog ends it at max-hold or on `synhold release`.
  const { HoldSession } = await import('../protect/hold/session.js');
  const s = await HoldSession.start({ ...scopeOf(g), maxHoldMs, lockWaitMs, via: 'plug', owner: 'none' });
  const held = s.held;
  s.detach();
  out(
    g,
    { held: true, watchdogPid: held.watchdogPid, backend: held.backend, since: held.since, deadline: held.deadline },
    `synhold: holding (${held.backend}, watchdog pid ${held.watchdogPid}); released by \`synhold release\` or in ${maxHoldMs} ms at the latest`,
  );
  return EXIT.ok;
}

async function cmdRelease(args: string[], g: Globals): Promise<number> {
  const { values: v } = parse(args, { wait: { type: 'string' } });
  mergeGlobals(g, v);
  const waitMs = durationOption('--wait', v.wait, 'lockWait', 3000);
  const store = StateStore.for(g.netns);
  const setupRecord = store.readSetup();
  if (!setupRecord) throw new NotSetUpError('synhold is not set up here; nothing to release');
  const { releaseHere } = await import('../protect/hold/recover.js');
  const r = await releaseHere(store, setupRecord, g.netns, { waitMs });
  const last = store.readStats().lastHold;
  out(
    g,
    { released: true, how: r.how, wasHolding: r.wasHolding, lastHold: last },
    `synhold: ${r.how}${last && r.wasHolding ? ` (held ${last.durationMs.toFixed(1)} ms; ${last.reason})` : ''}`,
  );
  return EXIT.ok;
}

/** A signal by name, with or without SIG (USR1, SIGUSR1), as kill(1) takes it; protect checks it is one. */
const signalName = (value: string) => (/^SIG/i.test(value) ? value.toUpperCase() : `SIG${value.toUpperCase()}`) as NodeJS.Signals;

async function cmdProtect(args: string[], g: Globals): Promise<number> {
  const dd = args.indexOf('--');
  if (dd < 0 || dd === args.length - 1)
    throw new UsageError('protect needs the command after --, e.g. synhold protect -- haproxy -f CFG -p PID -D -sf $(cat PID)');
  const command = args.slice(dd + 1);
  const { values: v } = parse(args.slice(0, dd), {
    timeout: { type: 'string' },
    'max-hold': { type: 'string' },
    ready: { type: 'string' },
    'lock-wait': { type: 'string' },
    'release-on': { type: 'string' },
    'settle-wait': { type: 'string' },
    'stop-old': { type: 'string' },
    'start-guard': { type: 'string' },
    priority: { type: 'string' },
    report: { type: 'string' },
    verbose: { type: 'boolean', short: 'v' },
  });
  mergeGlobals(g, v);
  let ready: { host: string; port: number } | undefined;
  if (v.ready) {
    const m = /^tcp:(\[[^\]]+\]|[^:]+):(\d+)$/.exec(v.ready);
    if (!m) throw new UsageError(`--ready "${v.ready}" is not tcp:HOST:PORT`);
    ready = { host: m[1]!.replace(/^\[|\]$/g, ''), port: parsePort(m[2]!) };
  }
  const stopOld = v['stop-old'] === undefined ? undefined : signalName(v['stop-old']);
  if (stopOld && v['release-on'] !== undefined)
    throw new UsageError(`--stop-old releases when the old server's listeners close; --release-on does not go with it`);
  const startGuard = v['start-guard'] ?? 'on';
  if (startGuard !== 'on' && startGuard !== 'off') throw new UsageError(`--start-guard must be on or off, not "${startGuard}"`);
  if (v['start-guard'] !== undefined && !stopOld)
    throw new UsageError("--start-guard goes with --stop-old (it guards the new server's start-up beside the old one)");
  const releaseOn = v['release-on'] ?? 'sockets';
  if (releaseOn !== 'sockets' && releaseOn !== 'exit' && releaseOn !== 'swap')
    throw new UsageError(`--release-on must be sockets, exit or swap, not "${releaseOn}"`);
  const priority = v.priority ?? 'realtime';
  if (priority !== 'realtime' && priority !== 'normal') throw new UsageError(`--priority must be realtime or normal, not "${priority}"`);
  const late = keepSignalsCaught();
  let r: Awaited<ReturnType<typeof protect>>;
  try {
    r = await protect({
      command,
      releaseOn,
      priority,
      ...(stopOld ? { stopOld, startGuard: startGuard === 'on' } : {}),
      ...scopeOf(g),
      ...(v.timeout ? { timeoutMs: durationOption('--timeout', v.timeout, 'timeout', 0) } : {}),
      maxHoldMs: durationOption('--max-hold', v['max-hold'], 'maxHold', DEFAULT_MAX_HOLD_MS),
      lockWaitMs: durationOption('--lock-wait', v['lock-wait'], 'lockWait', 30_000),
      ...(v['settle-wait'] ? { settleWaitMs: durationOption('--settle-wait', v['settle-wait'], 'settleWait', 0) } : {}),
      ready,
      ...(v.verbose ? { log: (l: string) => write(2, `synhold: ${l}\n`) } : {}),
    });
  } finally {
    late.protectReturned();
  }
  failpoint('returned');
  const cmd = r.command.error ? `could not run: ${r.command.error}` : r.command.signal ? `killed by ${r.command.signal}` : `exited ${r.command.exitCode}`;
  const held =
    r.holdMs === undefined && r.stopOld?.left
      ? `nothing held (${r.stopOld.left})`
      : `held ${r.holdMs?.toFixed(1) ?? '?'} ms (${r.released ?? 0} SYNs released, ${r.drops ?? 0} dropped; ${r.releaseReason ?? 'released'})`;
  const summary = `synhold: ${held}; command ${cmd}${r.timedOut ? ' after timeout' : ''}`;
  if (r.stopOld?.warning) write(2, `synhold: warning: ${r.stopOld.warning}\n`);
  if (r.steeringLeft)
    write(2, `synhold: warning: the hold's steering is still on the path (${r.steeringLeft}); the next hold, synhold release or teardown removes it\n`);
  if (r.othersCut)
    write(
      2,
      `synhold: warning: ${r.othersCut} packets other NFQUEUE users held were dropped when the hold's table went (still held at the end of the release's wait, OTHERS_IDLE_WAIT_MS); their senders retransmit. Set up with --steering always where other NFQUEUE users hold for long\n`,
    );
  if (g.json) out(g, r, '');
  // One JSON line per run, appended (O_APPEND: concurrent protects never interleave a line):
  // what a benchmark or a log shipper reads instead of the human summary below.
  if (v.report) appendFileSync(v.report, `${JSON.stringify(r)}\n`);
  write(2, `${summary}\n`);
  saveCodeCache();
  return r.exitCode;
}

/**
 * Keeps SIGINT, SIGTERM and SIGHUP caught for the protect CLI's whole run. protect (the
 * library) traps them only while it runs, and removing the last listener puts the default
 * action back at once; a repeated signal landing between its return and this process's exit
 * (a supervisor that sends two: the first wakes protect, which runs at realtime priority and
 * can finish its release before the sender's second kill(2)) would then kill the process by
 * signal, not with 128+N, and before the --report line is written. While protect runs, its own
 * trap acts on the signal and this listener does nothing; after, the output is already written
 * (it is synchronous, and listeners run between event-loop turns), so it exits with 128+N, or
 * with its own status when the event loop had nothing left to wait for.
 */
function keepSignalsCaught(): { protectReturned: () => void } {
  let returned = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (returned) process.exit(128 + signalNumber(sig));
  };
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, onSignal);
  return { protectReturned: () => (returned = true) };
}

async function cmdDaemon(args: string[], g: Globals): Promise<number> {
  const { values: v } = parse(args, { metrics: { type: 'string' } });
  mergeGlobals(g, v);
  let metrics: { host: string; port: number } | undefined;
  if (v.metrics) {
    const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(v.metrics);
    if (!m) throw new UsageError(`--metrics "${v.metrics}" is not HOST:PORT (e.g. 127.0.0.1:9473)`);
    metrics = { host: m[1]!.replace(/^\[|\]$/g, ''), port: parsePort(m[2]!) };
  }
  const log = (l: string) => process.stderr.write(`synhold daemon: ${l}\n`);
  const { runDaemon } = await import('../protect/daemon.js');
  const d = await runDaemon({ ...scopeOf(g), metrics, log });
  // Caught for the daemon's whole life, not once: a second signal while it closes (a supervisor that
  // sends two) would otherwise take the default action in the middle of a release.
  const sig = await new Promise<NodeJS.Signals>((resolve) => {
    let stopping = false;
    const onSignal = (s: NodeJS.Signals) => {
      if (stopping) log(`${s}: already releasing and stopping`);
      else resolve(s);
      stopping = true;
    };
    for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(s, onSignal);
  });
  log(`${sig}: releasing and stopping`);
  await d.close();
  return EXIT.ok;
}

async function cmdStatus(args: string[], g: Globals): Promise<number> {
  const { values: v } = parse(args, {});
  mergeGlobals(g, v);
  const [{ status }, { formatStatus }] = await Promise.all([import('../protect/setup.js'), import('./format.js')]);
  const s: StatusReport = await status(scopeOf(g));
  out(g, s, formatStatus(s));
  return !s.setUp ? EXIT.notSetUp : s.problem ? EXIT.unhealthy : EXIT.ok;
}

async function cmdTeardown(args: string[], g: Globals): Promise<number> {
  const { values: v } = parse(args, {});
  mergeGlobals(g, v);
  const { teardown } = await import('../protect/setup.js');
  const r = await teardown(scopeOf(g));
  out(g, r, r.removed ? `synhold: removed (${r.backend})` : 'synhold: nothing was set up');
  return EXIT.ok;
}

// Each command loads what it alone needs when it runs (import() below): protect, run on every
// reload, must not pay for the daemon's HTTP server or setup's iptables calls.
const COMMANDS: Record<string, (args: string[], g: Globals) => Promise<number>> = {
  setup: cmdSetup,
  plug: cmdPlug,
  release: cmdRelease,
  protect: cmdProtect,
  status: cmdStatus,
  daemon: cmdDaemon,
  teardown: cmdTeardown,
  bench: cmdBench,
  buffer: async (args, g) => (await import('../buffer/cli.js')).cmdBuffer(args, g),
};

/** What to do when the kernel lacks a feature: the lower layers say what is missing, the CLI knows the alternatives. */
const ADVICE: Record<KernelFeature, string> = {
  sch_plug: 'use --backend nfqueue',
  sch_prio: 'use --backend nfqueue',
  ifb: 'use --backend nfqueue',
  nfnetlink_queue: 'use --backend drop',
  xt_NFQUEUE: 'use --backend drop',
};

/**
 * `synhold bench` is the bench package's (bench/ in the repository: the seed's
 * experiment, the load generator, the kernel lab), which a production host does
 * not install. It is loaded only for this command, from the checkout this CLI
 * was built in.
 */
async function cmdBench(args: string[], g: Globals): Promise<number> {
  const BENCH_CLI = pathToFileURL(join(packageRoot(), 'dist', 'bench', 'src', 'cli.js'));
  if (!existsSync(fileURLToPath(BENCH_CLI))) {
    process.stderr.write(
      'synhold bench: the benchmark is not installed with synhold: it is the synhold-bench package of the synhold repository (bench/); in a checkout, run `npm ci && npm run build`, then `node dist/synhold.cjs bench`\n',
    );
    return EXIT.failed;
  }
  // The bundle turns import() into require() (esbuild --supported:dynamic-import=false: a built-in
  // loaded on demand through require costs far less than through the ESM loader); the bench package
  // is ESM, so it is imported through code-cache.ts's importEsm.
  const bench = (await importEsm(BENCH_CLI.href)) as { cmdBench(args: string[], g: Globals): Promise<number> };
  return bench.cmdBench(args, g);
}

/**
 * The exit status of the error's code (model/errors.ts); protect's own failures are 125 whatever
 * the cause. By code, not instanceof: `synhold bench` runs the bench package, whose errors come
 * from the ESM build of the same classes, not from this bundle's copy.
 */
function exitCodeFor(e: unknown, command: string): number {
  if (command === 'protect') return EXIT_FAILED;
  const code = (e as { code?: unknown } | undefined)?.code;
  return isErrorCode(code) ? EXIT[ERROR_CODES[code].exit] : EXIT.failed;
}

export async function main(argv: string[]): Promise<number> {
  const g: Globals = { json: false };
  let i = 0;
  // Global options before the command.
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--json') g.json = true;
    else if (a === '--netns') g.netns = argv[++i];
    else if (a.startsWith('--netns=')) g.netns = a.slice(8);
    else if (a === '-h' || a === '--help') {
      process.stdout.write(`${USAGE}\n`);
      return EXIT.ok;
    } else if (a === '--version') {
      process.stdout.write(`synhold ${packageVersion()}\n`);
      return EXIT.ok;
    } else break;
  }
  const command = argv[i];
  const run = command ? COMMANDS[command] : undefined;
  if (!run) {
    process.stderr.write(command ? `synhold: unknown command "${command}"\n${USAGE}\n` : `${USAGE}\n`);
    return EXIT.usage;
  }
  try {
    // A wrong target is one line and exit 2 (protect: 125) before anything acts (host/netns.ts).
    if (g.netns !== undefined && command !== 'bench') g.netns = resolveNetns(g.netns).path;
    // Checked up front, so a host without it gets one line before anything changes
    // (iptables rules, sysctls and protect's CMD go through it inside a namespace).
    if (g.netns !== undefined && command !== 'bench') requirePrograms(['nsenter'], 'for --netns');
    return await run(argv.slice(i + 1), g);
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    const lacks = (e as Partial<SynholdError> | undefined)?.lacks;
    const advice = lacks ? ADVICE[lacks] : undefined;
    write(2, `synhold ${command}: ${msg}${advice ? `; ${advice}` : ''}\n`);
    if (process.env.SYNHOLD_DEBUG && e instanceof Error) process.stderr.write(`${e.stack}\n`);
    return exitCodeFor(e, command!);
  }
}

let settled = false;
// A command whose work waits on something that can no longer happen (nothing left to keep the event
// loop alive) would otherwise end with status 0 and no word: say so, and fail.
process.once('beforeExit', () => {
  if (settled) return;
  process.stderr.write('synhold: internal error: the command stopped before it finished (a wait that nothing could end)\n');
  process.exitCode = EXIT_FAILED;
});
main(process.argv.slice(2)).then(
  (code) => {
    settled = true;
    process.exitCode = code;
  },
  (e: unknown) => {
    settled = true;
    process.stderr.write(`synhold: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exitCode = EXIT_FAILED;
  },
);
