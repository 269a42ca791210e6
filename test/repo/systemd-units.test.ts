/**
 * The shipped systemd units (deploy/systemd/): checked by systemd itself
 * (`systemd-analyze verify` and `security --offline` on a root that holds them
 * as installed, over this machine's unit tree and Debian's haproxy.service), and
 * the daemon's sandbox checked against the real daemon on this kernel: it holds
 * with the unit's capability bounding set and no other, and every system call it
 * makes through a hold (strace) is one the unit's SystemCallFilter allows.
 * systemd-analyze verify only warns about an unknown key or value and exits 0,
 * so any output is a failure here; mutated copies prove the check catches them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import {
  accessSync,
  chmodSync,
  constants,
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { withNetns } from '../helpers/netns.js';
import { CLI, synhold, synholdAsync } from '../helpers/cli.js';
import { startClient, startEchoServer } from '../helpers/tcp.js';
import { childrenOf, commOf, holdWithClient, kill, PORT, queueBound, reap, setupNfqueue, until } from '../helpers/faults.js';
import { StateStore } from '../../src/protect/state.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const DAEMON_UNIT = join(root, 'deploy/systemd/synhold-daemon.service');
const TEMPLATE_UNIT = join(root, 'deploy/systemd/synhold-daemon@.service');
const HAPROXY_DROPIN = join(root, 'deploy/systemd/haproxy.service.d/synhold.conf');

/**
 * A filesystem root for systemd-analyze --root: this machine's unit tree, the
 * units installed where the docs say (/etc/systemd/system), and the programs their
 * Exec lines name (verify fails on a missing one): synhold is the CLI bundle.
 */
function unitRoot(daemonUnit: string, dropIn: string, template = readFileSync(TEMPLATE_UNIT, 'utf8')): string {
  const r = mkdtempSync(join(tmpdir(), 'synhold-units-'));
  for (const d of ['etc/systemd/system/haproxy.service.d', 'usr/local/bin', 'usr/lib/systemd', 'usr/sbin', 'usr/bin'])
    mkdirSync(join(r, d), { recursive: true });
  cpSync('/usr/lib/systemd/system', join(r, 'usr/lib/systemd/system'), { recursive: true });
  for (const l of ['lib', 'bin', 'sbin']) symlinkSync(`usr/${l}`, join(r, l));
  writeFileSync(join(r, 'etc/systemd/system/synhold-daemon.service'), daemonUnit);
  writeFileSync(join(r, 'etc/systemd/system/synhold-daemon@.service'), template);
  writeFileSync(join(r, 'etc/systemd/system/haproxy.service.d/synhold.conf'), dropIn);
  copyFileSync(CLI, join(r, 'usr/local/bin/synhold'));
  chmodSync(join(r, 'usr/local/bin/synhold'), 0o755);
  copyFileSync('/usr/sbin/haproxy', join(r, 'usr/sbin/haproxy'));
  copyFileSync('/usr/bin/kill', join(r, 'usr/bin/kill'));
  copyFileSync('/bin/sh', join(r, 'usr/bin/sh'));
  return r;
}

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** What is wrong with the units: systemd-analyze verify's every line, and capability names the kernel does not have. */
function problems(daemonUnit: string, dropIn: string, template = readFileSync(TEMPLATE_UNIT, 'utf8')): string[] {
  const r = unitRoot(daemonUnit, dropIn, template);
  try {
    const units = ['synhold-daemon.service', 'synhold-daemon@test.service', 'haproxy.service'];
    // --man=no: Debian's haproxy.service names man:haproxy(1), and verify runs `man` for it, which a
    // fresh machine without man-db fails (a bare CI run: "Command 'man haproxy(1)' failed"). Our
    // units' Documentation= is a URL, which verify does not check either way.
    const v = spawnSync('systemd-analyze', ['verify', '--man=no', `--root=${r}`, ...units], { encoding: 'utf8' });
    const out = `${v.stdout}${v.stderr}`.split('\n').filter(Boolean);
    if (v.status !== 0 && out.length === 0) out.push(`systemd-analyze verify exited ${v.status}`);
    // verify ignores an unknown capability without a word: check the names against util-linux's list.
    const known = new Set(spawnSync('setpriv', ['--list-caps'], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean));
    for (const cap of [...capabilities(daemonUnit), ...capabilities(template)]) if (!known.has(cap)) out.push(`unknown capability CAP_${cap.toUpperCase()}`);
    // verify checks the program of ExecStart= and ExecStartPre=, not of ExecReload=: every Exec line's is checked here.
    for (const m of `${daemonUnit}\n${template}\n${dropIn}`.matchAll(/^Exec\w+=[-@:+!]*(\/\S+)/gm))
      if (!executable(join(r, m[1]!))) out.push(`${m[1]} is not an executable program`);
    return out.map((l) => l.replace(r, ''));
  } finally {
    rmSync(r, { recursive: true, force: true });
  }
}

/** The unit's CapabilityBoundingSet, as setpriv names them (net_admin). */
function capabilities(unit: string): string[] {
  const line = /^CapabilityBoundingSet=(.*)$/m.exec(unit)?.[1] ?? '';
  return line
    .split(/\s+/)
    .filter(Boolean)
    .map((c) => c.replace(/^CAP_/, '').toLowerCase());
}

test('systemd-analyze verify: the daemon unit, its per-namespace template and the haproxy.service drop-in as shipped, over Debian 12 haproxy.service: not a word', () => {
  assert.ok(existsSync('/usr/lib/systemd/system/haproxy.service'), "Debian's haproxy.service (package haproxy)");
  assert.deepEqual(problems(readFileSync(DAEMON_UNIT, 'utf8'), readFileSync(HAPROXY_DROPIN, 'utf8')), []);
});

test('the unit check catches a misspelt key, a bad value, an unknown system call or capability, a missing program', () => {
  const unit = readFileSync(DAEMON_UNIT, 'utf8');
  const dropIn = readFileSync(HAPROXY_DROPIN, 'utf8');
  const template = readFileSync(TEMPLATE_UNIT, 'utf8');
  const mutations: [string, string, string, RegExp, string?][] = [
    ['misspelt key', unit.replace('ProtectSystem=strict', 'ProtectSystm=strict'), dropIn, /Unknown key 'ProtectSystm' in section \[Service\]/],
    ['bad value', unit.replace('ProtectSystem=strict', 'ProtectSystem=strictest'), dropIn, /Failed to parse protect system value.*strictest/],
    ['unknown system call', unit.replace('@system-service pkey_alloc', '@system-service pkey_allocate'), dropIn, /Failed to parse system call.*pkey_allocate/],
    [
      'unknown capability',
      unit.replace('CapabilityBoundingSet=CAP_NET_ADMIN', 'CapabilityBoundingSet=CAP_NET_ADMINS'),
      dropIn,
      /unknown capability CAP_NET_ADMINS/,
    ],
    [
      'template: misspelt key',
      unit,
      dropIn,
      /Unknown key 'RuntimeDirectoryPreserv' in section \[Service\]/,
      template.replace('RuntimeDirectoryPreserve=', 'RuntimeDirectoryPreserv='),
    ],
    [
      'template: unknown capability',
      unit,
      dropIn,
      /unknown capability CAP_SYS_ADMN/,
      template.replace('CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_ADMIN', 'CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_ADMN'),
    ],
    ['drop-in: misspelt key', unit, dropIn.replace('ExecStartPre=', 'ExecStartPr='), /Unknown key 'ExecStartPr' in section \[Service\]/],
    [
      'drop-in: missing program',
      unit,
      dropIn.replace('ExecStartPre=/usr/local/bin/synhold', 'ExecStartPre=/usr/local/bin/nosuch'),
      /Command \/usr\/local\/bin\/nosuch is not executable/,
    ],
    [
      'drop-in: missing reload program',
      unit,
      dropIn.replace('ExecReload=/usr/sbin/haproxy', 'ExecReload=/usr/sbin/nosuch'),
      /\/usr\/sbin\/nosuch is not an executable program/,
    ],
  ];
  for (const [what, u, d, expected, tpl] of mutations) {
    const p = problems(u, d, tpl ?? template);
    assert.ok(
      p.some((l) => expected.test(l)),
      `${what}: ${JSON.stringify(p)}`,
    );
  }
});

test('systemd-analyze security --offline: the daemon unit and its template are exposed 2.5 or less (of 10)', (t) => {
  const r = unitRoot(readFileSync(DAEMON_UNIT, 'utf8'), readFileSync(HAPROXY_DROPIN, 'utf8'));
  try {
    for (const unit of ['synhold-daemon.service', 'synhold-daemon@test.service']) {
      const s = spawnSync('systemd-analyze', ['security', '--offline=true', `--root=${r}`, '--threshold=25', '--no-pager', unit], { encoding: 'utf8' });
      const level = new RegExp(`Overall exposure level for ${unit.replace('.', '\\.')}: ([\\d.]+)`).exec(s.stdout)?.[1];
      assert.ok(level, s.stdout + s.stderr);
      t.diagnostic(`${unit}: exposure ${level}`);
      assert.equal(s.status, 0, `${unit}: exposure ${level}: ${s.stderr}`);
    }
  } finally {
    rmSync(r, { recursive: true, force: true });
  }
});

/** A syscall group or name, expanded with systemd-analyze syscall-filter (groups nest). */
function expandSyscalls(entry: string, seen = new Set<string>()): Set<string> {
  if (!entry.startsWith('@')) return new Set([entry]);
  if (seen.has(entry)) return new Set();
  seen.add(entry);
  const out = new Set<string>();
  const r = spawnSync('systemd-analyze', ['syscall-filter', '--no-pager', entry], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  for (const line of r.stdout.split('\n').slice(1)) {
    const name = line.trim();
    if (name && !name.startsWith('#')) for (const s of expandSyscalls(name, seen)) out.add(s);
  }
  return out;
}

/** The system calls the unit's SystemCallFilter= lines allow: the allow list less the ~deny list. */
function allowedSyscalls(unit: string): Set<string> {
  const allow = new Set<string>();
  const deny = new Set<string>();
  for (const m of unit.matchAll(/^SystemCallFilter=(~?)(.*)$/gm)) {
    for (const entry of m[2]!.split(/\s+/).filter(Boolean)) for (const s of expandSyscalls(entry)) (m[1] ? deny : allow).add(s);
  }
  return new Set([...allow].filter((s) => !deny.has(s)));
}

/** The daemon under strace is strace's child: `ip netns exec` and setpriv exec, they do not fork. */
function daemonUnder(stracePid: number): number | undefined {
  return childrenOf(stracePid).find((c) => commOf(c) === 'node' || commOf(c) === 'MainThread');
}

interface DaemonRun {
  protect: number | null;
  protectStderr: string;
  clientOk: boolean;
  syscalls: Set<string>;
  daemonExit: number | null;
}

/**
 * `synhold daemon --metrics` inside a namespace (no setns, as the unit runs it for
 * the host's), with only the capabilities `caps`, under strace; one protect
 * through it with a client held, then a metrics scrape and SIGTERM. Returns
 * protect's exit, whether the client got through, the daemon's exit and the
 * system calls the daemon and its watchdog made.
 */
async function daemonRun(caps: string[], how: 'inside' | 'netns' = 'inside'): Promise<DaemonRun> {
  return withNetns(async (ns) => {
    const server = await startEchoServer(ns.name, '127.0.0.1', PORT);
    setupNfqueue(ns);
    const dir = mkdtempSync(join(tmpdir(), 'synhold-strace-'));
    const bounding = ['-all', ...caps.map((c) => `+${c}`)].join(',');
    const argv = ['setpriv', '--bounding-set', bounding, '--inh-caps', '-all', 'strace', '-f', '-qq', '-o', join(dir, 'trace')];
    // inside: entered by ip netns exec, as synhold-daemon.service serves its own namespace;
    // netns: from this namespace with --netns, as synhold-daemon@.service does (its HTTP port here).
    const d =
      how === 'inside'
        ? spawn('ip', ['netns', 'exec', ns.name, ...argv, process.execPath, CLI, 'daemon', '--metrics', '127.0.0.1:9473'], { stdio: 'ignore' })
        : spawn(argv[0]!, [...argv.slice(1), process.execPath, CLI, '--netns', ns.name, 'daemon', '--metrics', '127.0.0.1:19477'], { stdio: 'ignore' });
    const exited = new Promise<number | null>((r) => d.on('exit', (c) => r(c)));
    try {
      await until('the daemon socket', () => existsSync(StateStore.for(ns.name).daemonSocketPath));
      const p = synholdAsync(['--netns', ns.name, 'protect', '--', 'sleep', '1']);
      const held = await until('the hold', () => queueBound(ns), 3000).catch(() => false);
      const c = held ? startClient(ns.name, '127.0.0.1', PORT) : undefined;
      const pr = await p.done;
      const clientOk = c ? (await c.result).error === null : false;
      const scrape = `fetch('http://127.0.0.1:${how === 'inside' ? 9473 : 19477}/metrics').then((r) => process.exit(r.status === 200 ? 0 : 1))`;
      const scraper = how === 'inside' ? ['ip', ['netns', 'exec', ns.name, process.execPath, '-e', scrape]] : [process.execPath, ['-e', scrape]];
      assert.equal(spawnSync(scraper[0] as string, scraper[1] as string[]).status, 0, 'a metrics scrape');
      kill(daemonUnder(d.pid!) ?? d.pid!, 'SIGTERM');
      const daemonExit = await exited;
      const syscalls = new Set(
        readFileSync(join(dir, 'trace'), 'utf8')
          .split('\n')
          .map((l) => /^\d+\s+([a-z0-9_]+)\(/.exec(l)?.[1])
          .filter((x): x is string => Boolean(x)),
      );
      return { protect: pr.status, protectStderr: pr.stderr, clientOk, syscalls, daemonExit };
    } finally {
      kill(d.pid!, 'SIGKILL');
      server.kill();
      synhold(['--netns', ns.name, 'teardown']);
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test("the daemon unit's sandbox fits the real daemon: it holds with the unit's capabilities alone, and makes no system call the unit's filter denies", async (t) => {
  const unit = readFileSync(DAEMON_UNIT, 'utf8');
  const caps = capabilities(unit);
  assert.deepEqual(caps, ['net_admin']);
  const run = await daemonRun(caps);
  assert.equal(run.protect, 0, run.protectStderr);
  assert.ok(run.clientOk, 'the held client got through');
  assert.equal(run.daemonExit, 0, 'the daemon stopped cleanly on SIGTERM');
  const allowed = allowedSyscalls(unit);
  assert.ok(allowed.size > 300 && allowed.has('setns') && !allowed.has('mount'), `the filter expands (${allowed.size} calls)`);
  t.diagnostic(`system calls made: ${[...run.syscalls].sort().join(' ')}`);
  assert.ok(run.syscalls.size > 40, `strace saw the daemon (${run.syscalls.size} calls)`);
  assert.deepEqual(
    [...run.syscalls].filter((s) => !allowed.has(s)),
    [],
    'system calls the unit would deny',
  );
});

test('without CAP_NET_ADMIN the daemon cannot hold: protect through it fails (exit 125)', async () => {
  const run = await daemonRun([]);
  assert.equal(run.protect, 125, run.protectStderr);
  assert.match(run.protectStderr, /EPERM|needs root|CAP_NET_ADMIN/);
});

test("the template unit's sandbox fits the daemon with --netns: it holds with CAP_NET_ADMIN and CAP_SYS_ADMIN alone, within the filter; without CAP_SYS_ADMIN it cannot start", async (t) => {
  const unit = readFileSync(TEMPLATE_UNIT, 'utf8');
  const caps = capabilities(unit);
  assert.deepEqual(caps, ['net_admin', 'sys_admin']);
  const run = await daemonRun(caps, 'netns');
  assert.equal(run.protect, 0, run.protectStderr);
  assert.ok(run.clientOk, 'the held client got through');
  assert.equal(run.daemonExit, 0, 'the daemon stopped cleanly on SIGTERM');
  assert.ok(run.syscalls.has('setns'), 'it entered the namespace');
  const allowed = allowedSyscalls(unit);
  t.diagnostic(`system calls made: ${[...run.syscalls].sort().join(' ')}`);
  assert.deepEqual(
    [...run.syscalls].filter((s) => !allowed.has(s)),
    [],
    'system calls the unit would deny',
  );
  await withNetns(async (ns) => {
    const r = spawnSync('setpriv', ['--bounding-set', '-all,+net_admin', '--inh-caps', '-all', process.execPath, CLI, '--netns', ns.name, 'daemon'], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /needs CAP_SYS_ADMIN/);
  });
});

/** The fail-open ExecReload= line docs/OPERATIONS.md offers, as written there. */
function documentedFailOpenLine(): string {
  const doc = readFileSync(join(root, 'docs/OPERATIONS.md'), 'utf8');
  const line = /^ExecReload=\/bin\/sh -c .*$/m.exec(doc)?.[0];
  assert.ok(line, 'the line is in docs/OPERATIONS.md');
  return line;
}

test("docs/OPERATIONS.md's fail-open ExecReload= line: systemd accepts it, and it reloads anyway only when synhold failed (125)", () => {
  const line = documentedFailOpenLine();
  const dropIn = readFileSync(HAPROXY_DROPIN, 'utf8').replace(/^ExecReload=\/usr\/local\/bin\/synhold .*$/m, line);
  assert.notEqual(dropIn, readFileSync(HAPROXY_DROPIN, 'utf8'));
  assert.deepEqual(problems(readFileSync(DAEMON_UNIT, 'utf8'), dropIn), []);
  // What systemd runs: $$ is a literal $, ${MAINPID} the main pid; the single-quoted script is one word.
  const m = /^ExecReload=\/bin\/sh -c '(.*)' sh \$\{MAINPID\}$/.exec(line);
  assert.ok(m, line);
  const dir = mkdtempSync(join(tmpdir(), 'synhold-failopen-'));
  try {
    // Stand-ins for synhold (exits with $SYNHOLD_EXIT, running its CMD first unless that is 125) and kill (logs).
    writeFileSync(join(dir, 'synhold'), '#!/bin/sh\nshift 2\n[ "$SYNHOLD_EXIT" = 125 ] || "$@"\nexit "$SYNHOLD_EXIT"\n');
    writeFileSync(join(dir, 'kill'), `#!/bin/sh\necho "$@" >> ${join(dir, 'log')}\nexit "\${KILL_EXIT:-0}"\n`);
    for (const f of ['synhold', 'kill']) chmodSync(join(dir, f), 0o755);
    // systemd's expansion: $$ is a literal $, and $NAME or ${NAME} an environment variable, empty here.
    const script = m[1]!
      .replaceAll('$$', '\0')
      .replace(/\$\{[A-Za-z_]\w*\}|\$[A-Za-z_]\w*/g, '')
      .replaceAll('\0', '$')
      .replaceAll('/usr/local/bin/synhold', join(dir, 'synhold'))
      .replaceAll('/bin/kill', join(dir, 'kill'));
    const run = (env: Record<string, string>) => {
      rmSync(join(dir, 'log'), { force: true });
      const r = spawnSync('sh', ['-c', script, 'sh', '4242'], { env: { ...process.env, ...env }, encoding: 'utf8' });
      const log = existsSync(join(dir, 'log')) ? readFileSync(join(dir, 'log'), 'utf8') : '';
      return { status: r.status, kills: log.split('\n').filter(Boolean) };
    };
    assert.deepEqual(run({ SYNHOLD_EXIT: '0' }), { status: 0, kills: ['-USR2 4242'] }, 'protected: one reload');
    assert.deepEqual(run({ SYNHOLD_EXIT: '125' }), { status: 0, kills: ['-USR2 4242'] }, 'synhold failed: reloaded anyway');
    assert.deepEqual(run({ SYNHOLD_EXIT: '1', KILL_EXIT: '1' }), { status: 1, kills: ['-USR2 4242'] }, "kill's own failure is the reload's");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a restarted daemon (Restart=on-failure) ends the hold its killed predecessor left: the record is cleared, status finds no problem', async () => {
  await withNetns(async (ns) => {
    const server = await startEchoServer(ns.name, '127.0.0.1', PORT);
    setupNfqueue(ns);
    const first = synholdAsync(['--netns', ns.name, 'daemon']);
    const pids = [first.pid];
    let second: ReturnType<typeof synholdAsync> | undefined;
    try {
      await until('the daemon socket', () => existsSync(StateStore.for(ns.name).daemonSocketPath));
      const h = await holdWithClient(ns, { maxHold: '60s', daemonPid: first.pid });
      pids.push(h.watchdogPid, h.protectPid, ...h.cleanup);
      // The daemon and its watchdog die together, so neither can release (stopped first, then killed).
      for (const sig of ['SIGSTOP', 'SIGKILL'] as const) for (const p of [h.watchdogPid, first.pid]) kill(p, sig);
      await first.done;
      const left = JSON.parse(synhold(['--netns', ns.name, '--json', 'status']).stdout) as { problem?: string };
      assert.match(left.problem ?? '', /a hold record left by processes that are gone \(daemon pid \d+\)/);
      second = synholdAsync(['--netns', ns.name, 'daemon']);
      // The killed daemon's socket file is still there: wait for what the new one does at start.
      type Status = { problem?: string; held: boolean; hold?: unknown };
      // Until the new daemon has let go of the hold lock too: between clearing the record and
      // unlocking, status truthfully reports a hold ending ("held", no problem).
      const after = await until('the leftover hold to be ended', () => {
        const st = JSON.parse(synhold(['--netns', ns.name, '--json', 'status']).stdout) as Status;
        return st.problem === undefined && !st.held ? st : undefined;
      });
      assert.equal(after.problem, undefined);
      assert.equal(after.held, false);
      assert.equal(after.hold, undefined, 'the hold record is gone');
    } finally {
      reap(pids);
      if (second) {
        kill(second.pid, 'SIGTERM');
        const r = await second.done;
        assert.match(r.stderr, /released a hold left behind by processes that are gone/);
      }
      server.kill();
      synhold(['--netns', ns.name, 'teardown']);
    }
  });
});
