/**
 * A real systemd, booted as PID 1 of a throwaway container (systemd-nspawn,
 * Debian package systemd-container): this host's own root filesystem under a
 * tmpfs overlay (nothing the container writes persists), a network namespace of
 * its own with only `lo` (its traffic stays inside), and the checkout bound
 * read-only at /opt/synhold (the daemon's PrivateTmp= and ProtectHome= would hide
 * a checkout under /tmp or /home). Driven with `nsenter -t LEADER -a`, stopped by
 * PID. Works where the host's PID 1 is not systemd (this project's machines):
 *
 *   - nspawn refuses `--directory=/` ("Spawning container on root directory is not
 *     supported"), so the root is a non-recursive bind mount of / elsewhere;
 *   - without systemd on the host there is no bus: `--register=no --keep-unit`
 *     (no machined, no scope of its own: `machinectl` cannot see the machine);
 *   - the host and the container share a machine id: `--link-journal=no`.
 */
import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { alive, until } from './wait.js';

export interface Machine {
  readonly name: string;
  /** The container's PID 1 (systemd), as the host sees it. */
  readonly leader: number;
  readonly nspawnPid: number;
  /** Spawn to `systemctl is-system-running` answering running (or degraded), ms. */
  readonly bootMs: number;
  /** The container's network namespace, for `nsenter --net=`. */
  readonly netnsPath: string;
  /** A shell line inside the container (all its namespaces), bounded. */
  sh(script: string, timeoutMs?: number): SpawnSyncReturns<string>;
  /** As sh, but throws with the output unless it exits 0; returns stdout. */
  shOk(script: string, timeoutMs?: number): string;
  /** What the machine printed on its console so far (the boot, the shutdown). */
  console(): string;
  /** Orderly poweroff (SIGTERM to nspawn), SIGKILL after graceMs; unmounts and removes the root. Idempotent. */
  terminate(graceMs?: number): Promise<void>;
}

export interface BootOptions {
  name: string;
  /** Host path -> path in the container, read-only. */
  bindRo?: [string, string][];
  /** Units masked for this boot (systemd.mask= on PID 1's command line): the host's own servers. */
  mask?: string[];
  timeoutMs?: number;
}

const live = new Set<Machine>();
process.once('exit', () => {
  // Last resort (a test that threw past its finally): nothing may outlive the test process.
  for (const m of live) {
    try {
      process.kill(m.nspawnPid, 'SIGKILL');
    } catch {
      /* gone */
    }
    try {
      process.kill(m.leader, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
});

/** The container's PID 1: nspawn's child whose pid in its own namespace is 1. */
function findLeader(nspawnPid: number): number | undefined {
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    let status: string;
    try {
      status = readFileSync(`/proc/${d}/status`, 'utf8');
    } catch {
      continue;
    }
    if (!new RegExp(`^PPid:\\s+${nspawnPid}$`, 'm').test(status)) continue;
    const ns = /^NSpid:\s+(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/);
    if (ns && ns.length >= 2 && ns.at(-1) === '1') return Number(d);
  }
  return undefined;
}

/**
 * Whether something is mounted at path, from the kernel's own table (a missing or failing
 * `mountpoint` program must never read as "not mounted": the root is a bind mount of /, and
 * removing the directory while it is mounted would remove the host's files).
 */
function isMountPoint(path: string): boolean {
  const unescape = (f: string) => f.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => unescape(l.split(' ')[4] ?? '') === path);
}

/** The root mount and directory of a machine whose test process died before it could clean up. */
function sweepLeftovers(): void {
  for (const d of readdirSync('/tmp').filter((n) => n.startsWith('synhold-nspawn-'))) {
    const dir = join('/tmp', d);
    const pid = Number(existsSync(join(dir, 'nspawn.pid')) ? readFileSync(join(dir, 'nspawn.pid'), 'utf8') : 0);
    if (pid && alive(pid)) continue;
    const root = join(dir, 'root');
    if (isMountPoint(root)) spawnSync('umount', ['--lazy', root]);
    if (!isMountPoint(root)) rmSync(dir, { recursive: true, force: true });
  }
}

export async function bootMachine(o: BootOptions): Promise<Machine> {
  for (const p of ['systemd-nspawn', 'nsenter'])
    if (spawnSync('sh', ['-c', `command -v ${p}`]).status !== 0) throw new Error(`${p} is missing (scripts/install-deps.sh installs it)`);
  sweepLeftovers();
  const dir = mkdtempSync('/tmp/synhold-nspawn-');
  const root = join(dir, 'root');
  mkdirSync(root);
  const logPath = join(dir, 'console.log');
  const bind = spawnSync('mount', ['--bind', '/', root], { encoding: 'utf8' });
  if (bind.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`mount --bind / ${root}: ${bind.stderr}`);
  }
  const log = openSync(logPath, 'a');
  const args = [
    '--quiet',
    '--volatile=overlay',
    `--directory=${root}`,
    `--machine=${o.name}`,
    '--private-network',
    '--register=no',
    '--keep-unit',
    '--link-journal=no',
    '--console=passive',
    ...(o.bindRo ?? []).map(([from, to]) => `--bind-ro=${from}:${to}`),
    '--boot',
    '--',
    ...(o.mask ?? []).map((u) => `systemd.mask=${u}`),
  ];
  const t0 = Date.now();
  // setpriv --pdeathsig: should the test process die (a runner's timeout), nspawn gets SIGTERM and
  // powers the machine off; the next boot unmounts the root it left (sweepLeftovers).
  const child: ChildProcess = spawn('setpriv', ['--pdeathsig', 'SIGTERM', '--', 'systemd-nspawn', ...args], { stdio: ['ignore', log, log] });
  closeSync(log);
  writeFileSync(join(dir, 'nspawn.pid'), String(child.pid));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const nspawnPid = child.pid!;
  let leader = 0;
  let terminated = false;

  const sh = (script: string, timeoutMs = 30_000): SpawnSyncReturns<string> =>
    spawnSync('nsenter', ['-t', String(leader), '-a', '/bin/sh', '-c', script], { encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL' });
  const readConsole = (): string => (existsSync(logPath) ? readFileSync(logPath, 'utf8') : '');

  const m: Machine = {
    name: o.name,
    get leader() {
      return leader;
    },
    nspawnPid,
    bootMs: 0,
    get netnsPath() {
      return `/proc/${leader}/ns/net`;
    },
    sh,
    shOk(script, timeoutMs) {
      const r = sh(script, timeoutMs);
      if (r.status !== 0)
        throw new Error(`in ${o.name}: ${script}\nexit ${r.status ?? r.signal}${r.error ? ` (${r.error.message})` : ''}\n${r.stdout}${r.stderr}`);
      return r.stdout;
    },
    console: readConsole,
    async terminate(graceMs = 20_000) {
      if (terminated) return;
      terminated = true;
      if (alive(nspawnPid)) {
        // nspawn turns its first SIGTERM into an orderly poweroff of the container.
        child.kill('SIGTERM');
        await Promise.race([exited, sleep(graceMs)]);
      }
      if (alive(nspawnPid)) {
        child.kill('SIGKILL');
        if (leader && alive(leader)) process.kill(leader, 'SIGKILL'); // PID 1 of its namespace: takes every process in it along
        await Promise.race([exited, sleep(5000)]);
      }
      for (let i = 0; i < 50 && isMountPoint(root); i++) {
        if (spawnSync('umount', [root]).status !== 0) await sleep(100);
      }
      if (isMountPoint(root)) spawnSync('umount', ['--lazy', root]);
      // Only now is the root no mount point: removing it before would remove the host's files.
      if (!isMountPoint(root)) rmSync(dir, { recursive: true, force: true });
      live.delete(m);
    },
  };
  live.add(m);

  const deadline = t0 + (o.timeoutMs ?? 90_000);
  try {
    leader = await until(
      () => `systemd-nspawn to start a container:\n${readConsole()}`,
      () => {
        if (!alive(nspawnPid)) throw new Error(`systemd-nspawn did not start a container:\n${readConsole()}`);
        return findLeader(nspawnPid);
      },
      deadline - Date.now(),
      20,
    );
    // Until PID 1 answers on its private socket and the boot is over.
    let state = '';
    await until(
      () => `the container's systemd to be running: "${state}" after ${o.timeoutMs ?? 90_000} ms:\n${readConsole()}`,
      () => {
        if (!alive(nspawnPid)) throw new Error(`the container exited during its boot:\n${readConsole()}`);
        state = sh('systemctl is-system-running', 10_000).stdout.trim();
        return state === 'running' || state === 'degraded';
      },
      deadline - Date.now(),
      100,
    );
    (m as { bootMs: number }).bootMs = Date.now() - t0;
    return m;
  } catch (e) {
    await m.terminate(5000);
    throw e;
  }
}
