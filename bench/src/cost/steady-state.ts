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
 *   node dist/bench/src/cost/steady-state.js [--rounds N] [--seconds S] [--json]
 *
 * Run as root, alone. The namespace (synhold-bench-PID-steady-*) and every
 * process it starts are removed by PID at the end.
 */
import { spawn, spawnSync } from 'node:child_process';
import { release } from 'node:os';
import { fileURLToPath } from 'node:url';
import { addNetns, benchNetnsName, deleteNetns } from '../netns.js';
import { startNginx } from '../servers.js';
import { exec } from '../exec.js';
import { wrkArgv, wrkResult } from '../load/wrk.js';
import { median, writeReportPage } from './page.js';

const HOST = '127.0.0.1';
const PORT = 8001;
const BULK_PORT = 8002;
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

export type Condition = 'bare' | 'set up';
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

function synhold(netns: string, args: string[]): string {
  const r = spawnSync(process.execPath, [CLI, '--netns', netns, ...args], { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`synhold ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

async function measure(seconds: number): Promise<Sample> {
  return { newConnRps: await wrkRps(seconds, false), keepAliveRps: await wrkRps(seconds, true), bulkBytesPerS: bulk(seconds) };
}

/** Inside the namespace: nginx, then the rounds. */
async function inside(netns: string, rounds: number, seconds: number): Promise<SteadyRun> {
  const nginx = await startNginx({ host: HOST, port: PORT, workers: 1 });
  const samples: Record<Condition, Sample[]> = { bare: [], 'set up': [] };
  let backend = '';
  try {
    for (let r = 0; r < rounds; r++) {
      const order: Condition[] = r % 2 === 0 ? ['bare', 'set up'] : ['set up', 'bare'];
      for (const c of order) {
        if (c === 'set up')
          backend = (JSON.parse(synhold(netns, ['--json', 'setup', '--port', String(PORT), '--migrate-req', 'off'])) as { backend: string }).backend;
        try {
          samples[c].push(await measure(seconds));
        } finally {
          if (c === 'set up') synhold(netns, ['teardown']);
        }
        process.stderr.write(`steady-state: round ${r + 1}/${rounds} ${c}: ${JSON.stringify(samples[c].at(-1))}\n`);
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
  const out = [
    `## Linux ${run.kernel}, ${run.backend}, ${run.rounds} rounds of ${run.seconds} s per load`,
    '',
    `Command: \`${command}\``,
    '',
    '| load | bare | set up | set up / bare | per-round ratios, min - max |',
    '|---|---:|---:|---:|---:|',
  ];
  for (const [label, k, fmt] of rows) {
    const bare = run.samples.bare.map((s) => s[k]);
    const setUp = run.samples['set up'].map((s) => s[k]);
    const ratios = setUp.map((v, i) => v / bare[i]!);
    const pct = (v: number) => `${(v * 100).toFixed(1)}%`;
    out.push(
      `| ${label} | ${fmt(median(bare))} | ${fmt(median(setUp))} | ${pct(median(ratios))} | ${pct(Math.min(...ratios))} - ${pct(Math.max(...ratios))} |`,
    );
  }
  return `${out.join('\n')}\n`;
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
    "Medians of the rounds, and the median of each round's set-up / bare ratio. Goal: at least 99% of bare.",
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
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 50 || !(seconds >= 1 && seconds <= 60)) {
    process.stderr.write('steady-state: --rounds 1..50, --seconds 1..60\n');
    return 2;
  }
  const insideAt = args.indexOf('--inside');
  if (insideAt >= 0) {
    const run = await inside(args[insideAt + 1]!, rounds, seconds);
    process.stdout.write(
      args.includes('--json') ? `${JSON.stringify(run)}\n` : renderSteady(run, `node dist/bench/src/cost/steady-state.js ${args.slice(0, insideAt).join(' ')}`),
    );
    return 0;
  }
  const netns = benchNetnsName('steady');
  await addNetns(netns);
  try {
    const child = spawn('ip', ['netns', 'exec', netns, process.execPath, fileURLToPath(import.meta.url), ...args, '--inside', netns], { stdio: 'inherit' });
    const budget = setTimeout(() => child.kill('SIGTERM'), rounds * 2 * (3 * seconds + 60) * 1000 + 60_000);
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
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`steady-state: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    },
  );
}
