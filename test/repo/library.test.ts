/**
 * synhold as a library, as a user gets it: `npm pack`, the tarball installed in
 * an empty directory (its install script takes the prebuilt native addon and
 * watchdog: test/repo/no-compiler.test.ts), then a small program that imports 'synhold' and uses every exported
 * entry point against a real network namespace on this kernel.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { withNetns } from '../helpers/netns.js';
import { until } from '../helpers/faults.js';
import { ERROR_CODES } from '../../src/model/errors.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));

const PROGRAM = `
import * as synhold from 'synhold';
const ns = process.argv[2];
const out = { exports: Object.keys(synhold).sort() };
const cfg = synhold.normalizeConfig({ ports: [16000], backend: 'nfqueue' });
out.setup = (await synhold.setup(cfg, { netns: ns })).action;
out.status = (await synhold.status({ netns: ns })).backend;
{
  // What \`await using h = ...\` does (TypeScript 5.2+; Node.js 20 has Symbol.asyncDispose but not the syntax).
  const h = await synhold.hold({ netns: ns, maxHoldMs: 2000 });
  try {
    out.held = h.held.backend;
    out.holding = (await synhold.status({ netns: ns })).held;
  } finally {
    await h[Symbol.asyncDispose]();
  }
}
out.afterDispose = (await synhold.status({ netns: ns })).held;
const p = await synhold.protect({ command: ['true'], netns: ns, maxHoldMs: 2000, lockWaitMs: 1000 });
out.protect = { exitCode: p.exitCode, cause: p.releaseCause };
const ac = new AbortController();
ac.abort();
const aborted = await synhold.protect({ command: ['true'], netns: ns, maxHoldMs: 2000, lockWaitMs: 1000, signal: ac.signal });
out.aborted = aborted.exitCode;
out.release = (await synhold.release({ netns: ns })).how;
const rt = synhold.openRtnl(ns);
out.plugClass = typeof new synhold.Plug(rt, { dev: 'lo', parent: 0xffffffff, handle: 0x53020000 }).buffer;
rt.close();
out.durations = [synhold.parseDuration('2s'), synhold.parseSize('64k'), synhold.MAX_DURATION_MS.maxHold, synhold.DEFAULT_MAX_HOLD_MS, synhold.DEFAULT_SETTLE_WAIT_MS];
out.cause = synhold.describeCause({ kind: 'max-hold' });
try { await synhold.setup(synhold.normalizeConfig({ ports: [16000], backend: 'plug' }), { netns: ns }); } catch (e) { out.error = [e instanceof synhold.SynholdError, e.name, e.code, e.cliExitCode, e.lacks]; }
out.teardown = (await synhold.teardown({ netns: ns })).removed;
{
  // A buffer this program owns, driven through its control socket as \`synhold buffer\` would.
  const b = await synhold.buffer({ netns: ns, proto: 'udp', dport: 16001, maxHoldMs: 5000 });
  try {
    out.buffer = [(await synhold.listBuffer({ netns: ns })).held.heldPackets, (await synhold.stepBuffer({ netns: ns })).released];
    out.bufferRelease = (await synhold.releaseBuffer({ netns: ns })).cause;
  } finally {
    await b[Symbol.asyncDispose]();
  }
}
out.daemon = typeof synhold.runDaemon;
out.rtnl = typeof synhold.Rtnl.open;
console.log(JSON.stringify(out));
`;

test('npm pack, installed in an empty directory: import "synhold" and use every exported entry point', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'synhold-lib-'));
  try {
    const p = spawnSync('npm', ['pack', root, '--silent', '--pack-destination', dir], { cwd: dir, encoding: 'utf8' });
    assert.equal(p.status, 0, p.stderr);
    const tarball = join(dir, p.stdout.trim().split('\n').at(-1)!);
    writeFileSync(join(dir, 'package.json'), '{"name":"uses-synhold","version":"1.0.0","type":"module","private":true}\n');
    const i = spawnSync('npm', ['install', '--no-audit', '--no-fund', tarball], { cwd: dir, encoding: 'utf8', timeout: 300_000 });
    assert.equal(i.status, 0, `npm install: ${i.stderr}`);
    writeFileSync(join(dir, 'use.mjs'), PROGRAM);
    await withNetns(async (ns) => {
      const r = spawnSync(process.execPath, ['use.mjs', ns.name], { cwd: dir, encoding: 'utf8', timeout: 120_000 });
      assert.equal(r.status, 0, r.stderr);
      const out = JSON.parse(r.stdout) as Record<string, unknown>;
      // The error classes (one per code, all in the table) and the table's helpers; then the rest.
      const errorExports = [
        'EXIT',
        'ERROR_CLASSES',
        'ERROR_CODES',
        'SynholdError',
        'errorFromWire',
        'isErrorCode',
        ...Object.values(ERROR_CODES).map((e) => e.class),
      ];
      const exports = out.exports as string[];
      assert.deepEqual(exports.filter((n) => errorExports.includes(n)).sort(), [...errorExports].sort());
      assert.deepEqual(
        exports.filter((n) => !errorExports.includes(n)),
        [
          'DEFAULT_MAX_HOLD_MS',
          'DEFAULT_SETTLE_WAIT_MS',
          'MAX_DURATION_MS',
          'Plug',
          'Rtnl',
          'buffer',
          'describeCause',
          'hold',
          'listBuffer',
          'normalizeConfig',
          'openRtnl',
          'parseDuration',
          'parseSize',
          'protect',
          'release',
          'releaseBuffer',
          'runDaemon',
          'setup',
          'status',
          'stepBuffer',
          'teardown',
        ],
      );
      assert.equal(out.setup, 'created');
      assert.equal(out.status, 'nfqueue');
      assert.equal(out.held, 'nfqueue');
      assert.equal(out.holding, true);
      assert.equal(out.afterDispose, false, 'await using released the hold');
      assert.deepEqual(out.protect, { exitCode: 0, cause: 'command-exited' });
      assert.equal(out.aborted, 143, 'an aborted signal ends protect like SIGTERM, before CMD');
      assert.equal(out.release, 'nothing was held');
      assert.equal(out.plugClass, 'function');
      assert.deepEqual(out.durations, [2000, 65536, 600000, 5000, 2000]);
      assert.equal(out.cause, 'max-hold reached');
      // This kernel lacks what the plug backend needs: a NetlinkError (exit 1) that names the missing module.
      const [isBase, name, code, exit, lacks] = out.error as [boolean, string, string, number, string];
      assert.deepEqual([isBase, name, code, exit], [true, 'NetlinkError', 'ERR_NETLINK', 1]);
      assert.ok(['sch_prio', 'sch_plug'].includes(lacks), lacks);
      assert.equal(out.teardown, true);
      // The installed CLI's daemon serves metrics: prom-client is not in the bundle (it would slow
      // every command's start), so it must resolve from the package's installed dependencies.
      const cli = join(dir, 'node_modules/synhold/dist/synhold.cjs');
      const d = spawn(process.execPath, [cli, '--netns', ns.name, 'daemon', '--metrics', '127.0.0.1:19476'], { stdio: 'ignore' });
      try {
        const body = await until('the metrics endpoint', () =>
          fetch('http://127.0.0.1:19476/metrics').then(
            (res) => res.text(),
            () => undefined,
          ),
        );
        assert.match(body, /^synhold_up 0$/m);
        assert.match(body, /^process_resident_memory_bytes \d+/m);
      } finally {
        d.kill('SIGTERM');
      }
      assert.deepEqual(out.buffer, [0, 0], 'a buffer with nothing held lists and steps nothing');
      assert.equal(out.bufferRelease, 'release');
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
