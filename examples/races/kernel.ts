/**
 * What the races are judged by: the kernel's own word, read inside the race's
 * network namespace with ordinary tools (cat /proc, ss), never through synhold.
 * Also the one way peers are started there (`ip netns exec`, which execs: the
 * child's PID is the peer's own, so killing it by PID kills the peer).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';

/** Runs a command in the namespace and returns its stdout; throws with its stderr. */
export function nsRun(netns: string, argv: string[]): string {
  const r = spawnSync('ip', ['netns', 'exec', netns, ...argv], { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) throw new Error(`${argv.join(' ')} in ${netns}: exit ${r.status ?? r.signal}: ${r.stderr}`);
  return r.stdout;
}

/**
 * Every counter of the namespace's /proc/net/snmp and /proc/net/netstat, named as
 * nstat names them: `TcpOutRsts`, `TcpExtTCPAbortOnData`, `TcpExtTCPMigrateReqSuccess`.
 * (Each file is pairs of lines: `Tcp: Name Name ...` then `Tcp: 1 2 ...`.)
 */
export function counters(netns: string): Record<string, number> {
  const out: Record<string, number> = {};
  const lines = nsRun(netns, ['cat', '/proc/net/snmp', '/proc/net/netstat']).trim().split('\n');
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const [names, values] = [lines[i]!.split(/\s+/), lines[i + 1]!.split(/\s+/)];
    const group = names[0]!.replace(/:$/, '');
    for (let k = 1; k < names.length; k++) out[`${group}${names[k]}`] = Number(values[k]);
  }
  return out;
}

/** How much each named counter grew from `before` to now. */
export function grew(netns: string, before: Record<string, number>, names: string[]): Record<string, number> {
  const now = counters(netns);
  return Object.fromEntries(names.map((n) => [n, (now[n] ?? 0) - (before[n] ?? 0)]));
}

/** `ss -Htn state STATE '( sport = :PORT )'` in the namespace: how many sockets of the server's port are in that state. */
export function ssCount(netns: string, state: string, port: number): number {
  const out = nsRun(netns, ['ss', '-Htn', 'state', state, `( sport = :${port} )`]);
  return out.split('\n').filter((l) => l.trim()).length;
}

/** Packets waiting in NFQUEUE `queue` of the namespace (/proc/net/netfilter/nfnetlink_queue's queue_total). */
export function nfqueueTotal(netns: string, queue: number): number {
  const r = spawnSync('ip', ['netns', 'exec', netns, 'cat', '/proc/net/netfilter/nfnetlink_queue'], { encoding: 'utf8' });
  const row = (r.stdout ?? '')
    .split('\n')
    .map((l) => l.trim().split(/\s+/).map(Number))
    .find((f) => f[0] === queue && f.length >= 8);
  return row ? row[2]! : 0;
}

/** Polls until fn is truthy: bounded in time and in count. */
export async function until<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 5_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (let i = 0; i < 10_000 && Date.now() <= end; i++) {
    const v = await fn();
    if (v) return v;
    await sleep(3);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/**
 * A peer process in the namespace that prints one JSON object per line and takes
 * commands as lines on stdin. Killed by PID (its own) when the race is over.
 */
export interface Peer {
  readonly pid: number;
  /** Resolves with the first event (since the peer started) whose `ev` is `ev`. */
  next(ev: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  send(line: string): void;
  kill(): void;
}

export function startPeer(netns: string, argv: string[]): Peer {
  const child: ChildProcess = spawn('ip', ['netns', 'exec', netns, ...argv], { stdio: ['pipe', 'pipe', 'pipe'] });
  const seen: Record<string, unknown>[] = [];
  const waiters: (() => void)[] = [];
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdin!.on('error', () => undefined); // a peer that died: its outcome says so
  createInterface({ input: child.stdout! }).on('line', (l) => {
    seen.push(JSON.parse(l) as Record<string, unknown>);
    for (const w of waiters.splice(0)) w();
  });
  let exited = false;
  child.once('exit', () => {
    exited = true;
    for (const w of waiters.splice(0)) w();
  });
  return {
    pid: child.pid!,
    async next(ev, timeoutMs = 5_000) {
      const end = Date.now() + timeoutMs;
      for (let i = 0; i < 10_000; i++) {
        const e = seen.find((x) => x.ev === ev);
        if (e) return e;
        if (exited) throw new Error(`peer exited before "${ev}"; stderr: ${stderr}`);
        const left = end - Date.now();
        if (left <= 0) break;
        await new Promise<void>((r) => {
          const t = setTimeout(r, left);
          waiters.push(() => (clearTimeout(t), r()));
        });
      }
      throw new Error(`peer: no "${ev}" within ${timeoutMs} ms; events ${JSON.stringify(seen)}; stderr: ${stderr}`);
    },
    send: (line) => void child.stdin!.write(`${line}\n`),
    kill: () => void child.kill('SIGKILL'),
  };
}
