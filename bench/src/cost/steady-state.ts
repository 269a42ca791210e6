/**
 * What synhold costs while it is NOT holding: loopback traffic with synhold set
 * up against the same traffic without it, side by side in one run. The seed's
 * egress topology replaces lo's root (noqueue) with a prio qdisc, so every
 * loopback packet of the host goes through a locked qdisc; the nfqueue backend
 * adds an iptables rule that every packet is matched against. Three loads, on
 * nginx answering "pong" on the protected port (8001) in a namespace of its own:
 *   - new connections (wrk, `Connection: close`): every request's SYN matches the steering;
 *   - keep-alive requests (wrk): packets of established connections only;
 *   - bulk (python3, one TCP stream to another port): bytes per second.
 * Rounds alternate which condition goes first; the table gives medians of the
 * rounds and the median of each round's set-up / bare ratio.
 *
 *   node dist/bench/src/cost/steady-state.js [--rounds N] [--seconds S] [--topologies auto,prio,clsact]
 *        [--steerings always,while-holding] [--stand-ins prio,clsact,clsact-idle,clsact-between-holds] [--other-port] [--json]
 *
 * --topologies: one set-up condition per plug egress topology (`setup
 * --egress-topology T`, with setup's default steering: for auto and clsact, the filters only
 * while holding), each measured in every round beside bare; without it,
 * one condition, `set up`, with setup's defaults (the backend `auto` picks).
 * --steerings: one set-up condition per nfqueue steering (`setup --backend nfqueue
 * --steering S`): `always` keeps a rule in raw PREROUTING, `while-holding` installs
 * nothing until a hold, so its row is what being set up costs with no hold at all.
 * --stand-ins prio,clsact,clsact-idle,clsact-between-holds: one condition per plug egress topology built
 * with a pfifo where the plug would be (plug-stand-in.ts), for a kernel without sch_plug: while not
 * holding, a released plug queues as a pfifo does, so these rows are what the topology costs on this kernel.
 * --other-port: one more condition, `set up (another port)`: setup's defaults for
 * a port no load uses (8009). The steering is in place (the hook, the rule's
 * match for every packet) but no SYN of the loads matches it, which tells the
 * cost of being on the path from the cost of the SYNs the rule takes.
 * The conditions' order rotates from round to round, so a drift of the machine
 * (User-Mode Linux's speed drifts as it runs) spreads over all of them.
 *
 * Run as root, alone. The namespace (synhold-bench-PID-steady-*) and every
 * process it starts are removed by PID at the end.
 */
import { spawn, spawnSync } from 'node:child_process';
import { release } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { addNetns, benchNetnsName, deleteNetns } from '../netns.js';
import { startNginx } from '../servers.js';
import { exec } from '../exec.js';
import { wrkArgv, wrkResult } from '../load/wrk.js';
import { median, writeReportPage } from './page.js';
import { medianInterval } from '../median.js';
import { standIn, STAND_IN_TOPOLOGIES, type StandIn, type StandInTopology } from './plug-stand-in.js';
import { EGRESS_TOPOLOGIES, type EgressTopology } from '../../../src/model/config.js';

const HOST = '127.0.0.1';
const PORT = 8001;
const BULK_PORT = 8002;
/**
 * A quiet second after synhold's command and before the loads, in every condition: setup's nftables
 * transaction (and teardown's, before the next condition) leaves the kernel deferred work (RCU
 * callbacks, the table's release) that would otherwise land in the first load of whichever
 * condition comes next.
 */
const SETTLE_MS = 1000;
/** --other-port: protected, and used by no load. */
const OTHER_PORT = 8009;
/** Enough for a conclusive median on a noisy machine, and a bound on the run (rounds x conditions x 3 loads). */
const MAX_ROUNDS = 200;
const CLI = fileURLToPath(new URL('../../../synhold.cjs', import.meta.url));

// One TCP stream over lo for S seconds: the receiver prints the bytes it got per second.
const BULK = `
import socket, sys, threading, time
port, secs = int(sys.argv[1]), float(sys.argv[2])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind(("127.0.0.1", port)); srv.listen(1)
def send():
    c = socket.create_connection(("127.0.0.1", port)); buf = b"\\0" * 262144; end = time.monotonic() + secs
    while time.monotonic() < end: c.sendall(buf)
    c.close()
threading.Thread(target=send, daemon=True).start()
conn, _ = srv.accept(); total = 0; t0 = time.monotonic()
while True:
    b = conn.recv(1048576)
    if not b: break
    total += len(b)
print(total / (time.monotonic() - t0))
`;

/** `bare`, `set up` (setup's defaults), or `set up (T)` for an egress topology T. */
export type Condition = string;
export const BARE = 'bare';
export interface Sample {
  newConnRps: number;
  keepAliveRps: number;
  bulkBytesPerS: number;
}

export interface SteadyRun {
  kernel: string;
  backend: string;
  rounds: number;
  seconds: number;
  samples: Record<Condition, Sample[]>;
}

async function wrkRps(seconds: number, keepAlive: boolean): Promise<number> {
  const o = { threads: 1, connections: 50, durationS: seconds, keepAlive };
  const r = wrkResult(await exec(wrkArgv(HOST, PORT, o), { timeoutMs: (seconds + 30) * 1000 }), o);
  if (r.error || r.socketErrors > 0 || r.non2xx > 0) throw new Error(`wrk: ${r.error ?? `${r.socketErrors} socket errors, ${r.non2xx} non-2xx`}`);
  return r.rps;
}

function bulk(seconds: number): number {
  const r = spawnSync('python3', ['-c', BULK, String(BULK_PORT), String(seconds)], { encoding: 'utf8', timeout: (seconds + 30) * 1000 });
  const v = Number(r.stdout.trim());
  if (r.status !== 0 || !Number.isFinite(v)) throw new Error(`bulk: exit ${r.status}: ${r.stderr}`);
  return v;
}

function synhold(netns: string, args: string[], ok: readonly number[] = [0]): string {
  const r = spawnSync(process.execPath, [CLI, '--netns', netns, ...args], { encoding: 'utf8', timeout: 60_000 });
  if (!ok.includes(r.status ?? -1)) throw new Error(`synhold ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

async function measure(seconds: number): Promise<Sample> {
  return { newConnRps: await wrkRps(seconds, false), keepAliveRps: await wrkRps(seconds, true), bulkBytesPerS: bulk(seconds) };
}

/** One condition: bare, set up by synhold (setupArgs), or the plug topology's stand-in (plug-stand-in.ts). */
export interface ConditionSpec {
  name: Condition;
  setupArgs?: string[];
  standIn?: StandIn;
}

/** Each stand-in's condition name in the tables. */
const STAND_IN_NAMES: Record<StandInTopology, string> = {
  prio: "plug's prio topology, pfifo for the plug",
  clsact: "plug's clsact topology, pfifo for the plug",
  'clsact-idle': "plug's clsact topology without its filters, pfifo for the plug",
  'clsact-between-holds': "plug's default between holds (clsact, steering while holding), pfifo for the plug",
};

/** The conditions of a run, bare first, and how each set-up one is set up. */
export function conditionsFor(
  topologies: readonly string[],
  otherPort = false,
  steerings: readonly string[] = [],
  standIns: readonly StandInTopology[] = [],
): ConditionSpec[] {
  const setup = (port: number) => ['setup', '--port', String(port), '--migrate-req', 'off'];
  const base = setup(PORT);
  const other = otherPort ? [{ name: 'set up (another port)', setupArgs: setup(OTHER_PORT) }] : [];
  const stood = standIns.map((t) => ({ name: STAND_IN_NAMES[t], standIn: standIn(t, 'lo', PORT) }));
  if (topologies.length === 0 && steerings.length === 0 && standIns.length === 0) return [{ name: BARE }, { name: 'set up', setupArgs: base }, ...other];
  return [
    { name: BARE },
    ...topologies.map((t) => ({ name: `set up (${t})`, setupArgs: [...base, '--backend', 'plug', '--egress-topology', t] })),
    ...steerings.map((st) => ({ name: `set up (nfqueue, ${st})`, setupArgs: [...base, '--backend', 'nfqueue', '--steering', st] })),
    ...stood,
    ...other,
  ];
}

/** Runs argv lists in order (in this process's namespace); `strict`: the first failure throws. */
function runAll(cmds: readonly string[][], strict: boolean): void {
  for (const [cmd, ...args] of cmds) {
    const r = spawnSync(cmd!, args, { encoding: 'utf8', timeout: 30_000 });
    if (strict && r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.status}: ${r.stderr.trim()}`);
  }
}

/** Round r's order: the list rotated by r, so each condition goes first as often as any other. */
export function roundOrder<T>(items: readonly T[], r: number): T[] {
  const k = r % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

/** Inside the namespace: nginx, then the rounds. */
async function inside(
  netns: string,
  rounds: number,
  seconds: number,
  topologies: string[],
  otherPort: boolean,
  steerings: string[],
  standIns: StandInTopology[],
): Promise<SteadyRun> {
  const nginx = await startNginx({ host: HOST, port: PORT, workers: 1 });
  const conditions = conditionsFor(topologies, otherPort, steerings, standIns);
  const samples: Record<Condition, Sample[]> = Object.fromEntries(conditions.map((c) => [c.name, []]));
  // Without a synhold set-up condition, the heading names what the set-up rows are.
  let backend = conditions.some((c) => c.setupArgs) ? '' : 'plug topologies built by tc, a pfifo for the plug';
  try {
    for (let r = 0; r < rounds; r++) {
      for (const c of roundOrder(conditions, r)) {
        // Bare rounds start and end with synhold too (status, exit 3: not set up; teardown, which has
        // nothing to remove), so that both conditions measure right after the same Node.js start:
        // only the steering differs.
        // A stand-in is bare to synhold (status, teardown), with the topology built by tc beside it.
        if (c.standIn) runAll(c.standIn.install, true);
        if (c.setupArgs) backend = (JSON.parse(synhold(netns, ['--json', ...c.setupArgs])) as { backend: string }).backend;
        else synhold(netns, ['--json', 'status'], [3]);
        try {
          await sleep(SETTLE_MS);
          samples[c.name]!.push(await measure(seconds));
        } finally {
          synhold(netns, ['teardown']);
          if (c.standIn) runAll(c.standIn.remove, false);
        }
        process.stderr.write(`steady-state: round ${r + 1}/${rounds} ${c.name}: ${JSON.stringify(samples[c.name]!.at(-1))}\n`);
      }
    }
  } finally {
    await nginx.stop();
  }
  return { kernel: release(), backend, rounds, seconds, samples };
}

/** The table: medians per condition, and the median of the per-round ratios. */
export function renderSteady(run: SteadyRun, command: string): string {
  const rows: [string, keyof Sample, (v: number) => string][] = [
    ['new connections (req/s, `Connection: close`)', 'newConnRps', (v) => v.toFixed(0)],
    ['keep-alive requests (req/s)', 'keepAliveRps', (v) => v.toFixed(0)],
    ['bulk, one TCP stream (MB/s)', 'bulkBytesPerS', (v) => (v / 1e6).toFixed(0)],
  ];
  const setUps = Object.keys(run.samples).filter((c) => c !== BARE);
  const out = [
    `## Linux ${run.kernel}, ${run.backend}, ${run.rounds} rounds of ${run.seconds} s per load`,
    '',
    `Command: \`${command}\``,
    '',
    `| load | condition | bare | set up | set up / bare (median of rounds) | 95% interval of that median | per-round min - max | >= ${pct(GOAL)} of bare |`,
    '|---|---|---:|---:|---:|---:|---:|---|',
  ];
  for (const [label, k, fmt] of rows) {
    const bare = run.samples[BARE]!.map((s) => s[k]);
    for (const c of setUps) {
      const setUp = run.samples[c]!.map((s) => s[k]);
      const ratios = setUp.map((v, i) => v / bare[i]!);
      const ci = medianInterval(ratios);
      out.push(
        `| ${label} | ${c} | ${fmt(median(bare))} | ${fmt(median(setUp))} | ${pct(median(ratios))} | ` +
          `${ci ? `${pct(ci.low)} - ${pct(ci.high)}` : 'too few rounds'} | ${pct(Math.min(...ratios))} - ${pct(Math.max(...ratios))} | ${verdict(ci)} |`,
      );
    }
  }
  return `${out.join('\n')}\n`;
}

/** The goal: set up costs at most 1% of bare. */
export const GOAL = 0.99;

function pct(v: number): string {
  return `${(v * 100).toFixed(1)}%`;
}

/** Met when the whole interval is at or above the goal, not met when it is all below, open otherwise. */
export function verdict(ci: { low: number; high: number } | undefined): string {
  if (!ci) return 'open (too few rounds)';
  if (ci.low >= GOAL) return 'met';
  if (ci.high < GOAL) return '**not met**';
  return 'open (the interval spans the goal)';
}

/** `report OUT.md [--notes FILE.md] RUN.json=COMMAND ...`: the page, from runs made with --json (the notes verbatim after the tables). */
function report(out: string, args: string[]): void {
  const head = [
    '# What synhold costs while not holding',
    '',
    'Generated by `node dist/bench/src/cost/steady-state.js report` from runs of the same script with `--json`',
    '(`scripts/steady-state.sh` makes them and this page). Loopback traffic in a network namespace, with synhold set',
    'up (`synhold setup --port 8001 --migrate-req off`, the backend `auto` picks) and without, the two conditions taking',
    'turns within each round: nginx answering "pong" on the protected port 8001 to wrk (new connections: every SYN',
    'meets the steering; keep-alive: established packets only) and one bulk TCP stream (python3) on another port.',
    "Medians of the rounds, and the median of each round's set-up / bare ratio with its 95% confidence interval",
    '(distribution-free, from the order statistics of the rounds). Goal: at least 99% of bare; met when the whole',
    'interval is at or above it, not met when the whole interval is below.',
    '',
  ];
  writeReportPage<SteadyRun>(out, args, head, renderSteady);
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  if (args[0] === 'report') {
    report(args[1]!, args.slice(2));
    return 0;
  }
  const num = (flag: string, dflt: number) => (args.includes(flag) ? Number(args[args.indexOf(flag) + 1]) : dflt);
  const rounds = num('--rounds', 5);
  const seconds = num('--seconds', 5);
  const topologies = args.includes('--topologies') ? (args[args.indexOf('--topologies') + 1] ?? '').split(',') : [];
  const steerings = args.includes('--steerings') ? (args[args.indexOf('--steerings') + 1] ?? '').split(',') : [];
  const otherPort = args.includes('--other-port');
  const standIns = (args.includes('--stand-ins') ? (args[args.indexOf('--stand-ins') + 1] ?? '').split(',') : []) as StandInTopology[];
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > MAX_ROUNDS || !(seconds >= 1 && seconds <= 60)) {
    process.stderr.write(`steady-state: --rounds 1..${MAX_ROUNDS}, --seconds 1..60\n`);
    return 2;
  }
  if (topologies.some((t) => !EGRESS_TOPOLOGIES.includes(t as EgressTopology)) || new Set(topologies).size !== topologies.length) {
    process.stderr.write(`steady-state: --topologies is a list of ${EGRESS_TOPOLOGIES.join(', ')}, each at most once\n`);
    return 2;
  }
  if (steerings.some((t) => t !== 'always' && t !== 'while-holding') || new Set(steerings).size !== steerings.length) {
    process.stderr.write('steady-state: --steerings is a list of always and while-holding, each at most once\n');
    return 2;
  }
  if (standIns.some((t) => !STAND_IN_TOPOLOGIES.includes(t)) || new Set(standIns).size !== standIns.length) {
    process.stderr.write(`steady-state: --stand-ins is a list of ${STAND_IN_TOPOLOGIES.join(', ')}, each at most once\n`);
    return 2;
  }
  const insideAt = args.indexOf('--inside');
  if (insideAt >= 0) {
    const run = await inside(args[insideAt + 1]!, rounds, seconds, topologies, otherPort, steerings, standIns);
    process.stdout.write(
      args.includes('--json') ? `${JSON.stringify(run)}\n` : renderSteady(run, `node dist/bench/src/cost/steady-state.js ${args.slice(0, insideAt).join(' ')}`),
    );
    return 0;
  }
  const netns = benchNetnsName('steady');
  await addNetns(netns);
  try {
    const child = spawn('ip', ['netns', 'exec', netns, process.execPath, fileURLToPath(import.meta.url), ...args, '--inside', netns], { stdio: 'inherit' });
    const conditions = conditionsFor(topologies, otherPort, steerings, standIns).length;
    const budget = setTimeout(() => child.kill('SIGTERM'), rounds * conditions * (3 * seconds + 60) * 1000 + 60_000);
    const code = await new Promise<number>((resolve) => child.on('exit', (c) => resolve(c ?? 1)));
    clearTimeout(budget);
    return code;
  } finally {
    const left = await deleteNetns(netns);
    if (left.length > 0) process.stderr.write(`steady-state: stopped processes left in ${netns}: ${left.join(', ')}\n`);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().then(
    // After stdout has drained: process.exit right after a write can cut a piped result short.
    (code) => process.stdout.write('', () => process.exit(code)),
    (e: unknown) => {
      process.stderr.write(`steady-state: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    },
  );
}
