/**
 * `npm install synhold` on a host without a compiler: the package ships its
 * native addon and watchdog prebuilt (prebuilds/linux-x64 and linux-arm64, made
 * by scripts/prebuild.sh at `npm pack`), and its install script uses them after
 * checking that they load and run. The install runs with a PATH that holds
 * node, npm and sh and nothing else (no cc, make, python3: node-gyp could not
 * run). Then the installed CLI holds for real with the prebuilt watchdog, a
 * wrong-architecture binary is one clear line, and an install that has to build
 * without a compiler says what to install.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { withNetns } from '../helpers/netns.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));

/** A PATH directory with only what npm needs to install (node, npm, sh). */
function barePath(dir: string): string {
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  for (const [name, target] of [
    ['node', process.execPath],
    ['npm', '/usr/bin/npm'],
    ['sh', '/bin/sh'],
  ] as const)
    symlinkSync(target, join(bin, name));
  for (const tool of ['cc', 'gcc', 'make', 'python3', 'g++'])
    assert.notEqual(spawnSync('sh', ['-c', `command -v ${tool}`], { env: { PATH: bin } }).status, 0, `${tool} is not on the bare PATH`);
  return bin;
}

function elfMachine(path: string): number {
  const h = readFileSync(path).subarray(0, 20);
  assert.equal(h.readUInt32BE(0), 0x7f454c46, `${path} is an ELF file`);
  return h.readUInt16LE(18);
}

test('no compiler on the host: npm install uses the prebuilt addon and watchdog; the CLI holds with them; a wrong-architecture binary and a build without a compiler say so in one line', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'synhold-nocc-'));
  try {
    const p = spawnSync('npm', ['pack', root, '--silent', '--pack-destination', dir], { cwd: dir, encoding: 'utf8' });
    assert.equal(p.status, 0, p.stderr);
    const tarball = join(dir, p.stdout.trim().split('\n').at(-1)!);
    const listing = spawnSync('tar', ['-tzf', tarball], { encoding: 'utf8' }).stdout;
    for (const f of ['linux-x64/synhold_native.node', 'linux-x64/synhold-watchdog', 'linux-arm64/synhold_native.node', 'linux-arm64/synhold-watchdog'])
      assert.ok(listing.includes(`package/prebuilds/${f}`), `the tarball ships prebuilds/${f}`);

    const bin = barePath(dir);
    const app = join(dir, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), '{"name":"uses-synhold","version":"1.0.0","private":true}\n');
    const env = { PATH: bin, HOME: dir, npm_config_cache: join(dir, 'npm-cache') };
    const i = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--foreground-scripts', tarball], { cwd: app, encoding: 'utf8', env, timeout: 300_000 });
    assert.equal(i.status, 0, `npm install without a compiler: ${i.stderr}`);
    assert.match(i.stderr + i.stdout, /synhold: using the prebuilt native addon and watchdog for linux-x64/);
    const pkg = join(app, 'node_modules', 'synhold');
    assert.equal(existsSync(join(pkg, 'build')), false, 'nothing was compiled');
    assert.equal(elfMachine(join(pkg, 'prebuilds/linux-arm64/synhold_native.node')), 0xb7, 'the arm64 addon is an AArch64 binary');
    assert.equal(elfMachine(join(pkg, 'prebuilds/linux-arm64/synhold-watchdog')), 0xb7, 'the arm64 watchdog is an AArch64 binary');

    const cli = join(pkg, 'dist', 'synhold.cjs');
    const run = (args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
    await withNetns(async (ns) => {
      assert.equal(run(['--netns', ns.name, 'status']).status, 3, 'the prebuilt addon loads (not set up here)');
      const s = run(['--netns', ns.name, 'setup', '--port', '16300', '--backend', 'nfqueue']);
      assert.equal(s.status, 0, s.stderr);
      try {
        const plug = run(['--netns', ns.name, '--json', 'plug', '--max-hold', '5s']);
        assert.equal(plug.status, 0, plug.stderr);
        const wd = (JSON.parse(plug.stdout) as { watchdogPid: number }).watchdogPid;
        assert.equal(readlinkSync(`/proc/${wd}/exe`), join(pkg, 'prebuilds/linux-x64/synhold-watchdog'), 'the hold runs the prebuilt watchdog');
        assert.match(run(['--netns', ns.name, 'status']).stdout, /held/);
        assert.equal(run(['--netns', ns.name, 'release']).status, 0);
      } finally {
        run(['--netns', ns.name, 'teardown']);
      }

      // A binary of the wrong architecture where this one's should be: one line, exit 1.
      copyFileSync(join(pkg, 'prebuilds/linux-arm64/synhold_native.node'), join(pkg, 'prebuilds/linux-x64/synhold_native.node'));
      const wrong = run(['--netns', ns.name, 'status']);
      assert.equal(wrong.status, 1, wrong.stderr);
      assert.equal(wrong.stderr.trimEnd().split('\n').length, 1, wrong.stderr);
      assert.match(
        wrong.stderr,
        /prebuilds\/linux-x64\/synhold_native\.node is not built for linux-x64 \(ELF machine 0xb7\); rebuild from source: `npm rebuild synhold`/,
      );
    });

    // Made to build from source, without a compiler: the install fails and says what to install.
    const app2 = join(dir, 'app2');
    mkdirSync(app2);
    writeFileSync(join(app2, 'package.json'), '{"name":"uses-synhold","version":"1.0.0","private":true}\n');
    const b = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--foreground-scripts', tarball], {
      cwd: app2,
      encoding: 'utf8',
      env: { ...env, SYNHOLD_BUILD_FROM_SOURCE: '1' },
      timeout: 300_000,
    });
    assert.notEqual(b.status, 0);
    assert.match(b.stderr + b.stdout, /install a C compiler, make and python3 \(Debian: apt-get install build-essential python3\), then `npm rebuild synhold`/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
