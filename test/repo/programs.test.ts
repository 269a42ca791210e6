/**
 * Every program the code runs is installed by the project's own scripts: a test
 * that spawns a program scripts/install-deps.sh does not install passes on a
 * machine that happens to have it and fails on a fresh one (a missing `nft` once
 * turned CI red exactly that way). This reads the TypeScript sources for the
 * programs they spawn and checks each against scripts/programs.txt, the table
 * install-deps.sh installs from and checks after installing.
 *
 * Run: cd /work/main && npx tsc -p . && node --test dist/test/repo/
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../../', import.meta.url));

function listed(): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of readFileSync(join(root, 'scripts/programs.txt'), 'utf8').split('\n')) {
    if (line.startsWith('#') || !line.trim()) continue;
    const [prog, pkg] = line.trim().split(/\s+/);
    if (prog && pkg) out.set(prog, pkg);
  }
  return out;
}

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(join(root, dir), { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...sources(p));
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

// A literal program name as the first argument of a spawn (`ns.exec(...)` included),
// or the first element of an argv array handed to one, or a `..._BIN = '/usr/sbin/x'`
// constant.
const SPAWN = /\b(?:spawn|spawnSync|execFile|execFileSync|execFileP|runCommand|exec)\(\s*\[?\s*(['"`])([A-Za-z0-9_./+-]+)\1/g;
const ARGV = /\b(?:argv|cmd|command)\s*[:=]\s*\[\s*(['"`])([A-Za-z0-9_./+-]+)\1\s*,/g;
const BIN_CONST = /\b[A-Z_]*BIN\s*=\s*(['"`])(\/[A-Za-z0-9_./+-]+)\1/g;

/** Program names spawned by literal name in the sources, with where. */
function spawned(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const file of [...sources('src'), ...sources('bench/src'), ...sources('test')]) {
    if (file === 'test/repo/programs.test.ts') continue; // its own examples below
    const text = readFileSync(join(root, file), 'utf8');
    for (const re of [SPAWN, ARGV, BIN_CONST]) {
      for (const m of text.matchAll(re)) {
        const name = basename(m[2]!);
        // Deliberately absent programs (error-path tests), node and synhold themselves.
        if (/nosuch|nonexistent|does-not-exist/.test(m[2]!) || /^(node|synhold)$/.test(name)) continue;
        (out.get(name) ?? out.set(name, []).get(name)!).push(file);
      }
    }
  }
  return out;
}

test('every program the sources spawn is in scripts/programs.txt (installed by install-deps.sh)', () => {
  const known = listed();
  const found = spawned();
  assert.ok(found.size >= 10, `the scan finds the programs the code runs (found ${[...found.keys()].join(', ')})`);
  const missing = [...found].filter(([name]) => !known.has(name)).map(([name, files]) => `${name} (${[...new Set(files)].join(', ')})`);
  assert.deepEqual(missing, [], 'programs spawned but not listed in scripts/programs.txt');
});

test('every program in scripts/programs.txt is on this machine (install-deps.sh ran)', () => {
  const absent = [...listed()].filter(([prog]) => spawnSync('sh', ['-c', `command -v "${prog}"`]).status !== 0);
  assert.deepEqual(
    absent.map(([p, pkg]) => `${p} (${pkg})`),
    [],
  );
});

test('the scan would catch a new program', () => {
  const text =
    "await runCommand(['frobctl', '-x']); spawnSync('gizmo', []); ns.exec('widget', ['a']); const argv = ['doohickey', 'x']; const GADGET_BIN = '/usr/sbin/gadget';";
  const names = [SPAWN, ARGV, BIN_CONST].flatMap((re) => [...text.matchAll(re)].map((m) => basename(m[2]!)));
  assert.deepEqual(names.sort(), ['doohickey', 'frobctl', 'gadget', 'gizmo', 'widget']);
});
