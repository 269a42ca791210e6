/**
 * Two packages in one repository: `synhold` (the root: library, CLI, daemon,
 * native addon: what a production host installs) and `synhold-bench` (bench/:
 * the seed experiment, the load generator, the kernel lab). The core package
 * must ship none of the bench and depend on nothing the bench needs.
 *
 * Run: cd /work/main && npx tsc -p . && node --test dist/test/repo/
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const readJson = (p: string) => JSON.parse(readFileSync(join(root, p), 'utf8')) as Record<string, Record<string, string> | string[] | string>;

test('npm pack of the core package: no bench or lab code, no bench dependency, the CLI and the addon sources', () => {
  const r = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const files = (JSON.parse(r.stdout) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path);
  assert.deepEqual(
    files.filter((f) => /(^|\/)(bench|lab)(\/|$)|hdr-histogram/.test(f)),
    [],
    'bench or lab files in the core package',
  );
  for (const f of ['dist/synhold.cjs', 'dist/src/cli/main.js', 'dist/src/protect/protect.js', 'native/netlink_socket.c', 'native/watchdog.c', 'binding.gyp'])
    assert.ok(files.includes(f), `${f} is shipped`);
  const core = readJson('package.json');
  const bench = readJson('bench/package.json');
  assert.deepEqual(core.workspaces, ['bench']);
  assert.ok(!('hdr-histogram-js' in ((core.dependencies as Record<string, string>) ?? {})), 'the bench dependency is the bench package');
  assert.ok('hdr-histogram-js' in (bench.dependencies as Record<string, string>));
});

test('the core never imports the bench at run time (synhold bench loads it only when asked, if it is there)', () => {
  const offenders: string[] = [];
  const walk = (dir: string): void => {
    for (const e of readdirSync(join(root, dir), { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (/from '(\.\.\/)+bench\//.test(readFileSync(join(root, p), 'utf8').replace(/^import type .*$/gm, ''))) offenders.push(p);
    }
  };
  walk('src');
  assert.deepEqual(offenders, []);
});

test('the core package alone: synhold bench says where the benchmark is (exit 1), one line', () => {
  const dir = mkdtempSync(join(tmpdir(), 'synhold-pack-'));
  try {
    const p = spawnSync('npm', ['pack', root, '--ignore-scripts', '--silent', '--pack-destination', dir], { cwd: dir, encoding: 'utf8' });
    assert.equal(p.status, 0, p.stderr);
    const x = spawnSync('tar', ['xzf', join(dir, p.stdout.trim().split('\n').at(-1)!), '-C', dir]);
    assert.equal(x.status, 0, String(x.stderr));
    const r = spawnSync(process.execPath, [join(dir, 'package/dist/synhold.cjs'), 'bench'], { encoding: 'utf8' });
    assert.equal(r.status, 1, r.stderr);
    assert.match(
      r.stderr,
      /^synhold bench: the benchmark is not installed with synhold: it is the synhold-bench package of the synhold repository \(bench\/\).*\n$/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
