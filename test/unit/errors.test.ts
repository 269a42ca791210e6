/**
 * The one table of failures (src/model/errors.ts) is the whole list, both ways:
 * every class that extends SynholdError in src/ throws exactly the code the
 * table gives it, every code in the table has exactly one class, no code is
 * thrown as a bare SynholdError, and the CLI's exit status comes from the class.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as lib from '../../src/index.js';
import { ERROR_CLASSES, ERROR_CODES, EXIT, errorFromWire, InternalError, SynholdError, type ErrorCode } from '../../src/model/errors.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const sources = (readdirSync(join(root, 'src'), { recursive: true }) as string[])
  .filter((f) => f.endsWith('.ts'))
  .map((f) => ({ file: `src/${f}`, text: readFileSync(join(root, 'src', f), 'utf8') }));

/** class name -> the code its constructor passes to super(), read from the source. */
function classesInSource(): Map<string, { file: string; code: string }> {
  const found = new Map<string, { file: string; code: string }>();
  for (const { file, text } of sources) {
    for (const m of text.matchAll(/export class (\w+) extends (\w+)[^{]*\{(?:(?!export class)[\s\S])*?super\('(ERR_[A-Z_]+)'/g)) {
      assert.ok(!found.has(m[1]!), `${m[1]} defined twice`);
      found.set(m[1]!, { file, code: m[3]! });
    }
  }
  return found;
}

test('errors: each code has one class, each class the code the table gives it', () => {
  const inSource = classesInSource();
  const classes = Object.values(ERROR_CODES).map((e) => e.class);
  assert.equal(new Set(classes).size, classes.length, 'a class named for two codes');
  for (const [code, e] of Object.entries(ERROR_CODES)) {
    const c = inSource.get(e.class);
    assert.ok(c, `${code}: class ${e.class} is not defined in src/`);
    assert.equal(c.code, code, `${e.class} (${c.file}) throws ${c.code}, the table says ${code}`);
  }
  for (const [name, c] of inSource) assert.ok(Object.hasOwn(ERROR_CODES, c.code), `${name} (${c.file}) throws ${c.code}, which the table lacks`);
});

test('errors: no code is thrown as a bare SynholdError (each failure has its class)', () => {
  const bare = sources.filter(({ file, text }) => file !== 'src/model/errors.ts' && /new SynholdError\(/.test(text)).map((s) => s.file);
  assert.deepEqual(bare, []);
});

test('errors: the plain classes carry their code, name and CLI exit status, and are exported by the library', () => {
  for (const [code, C] of Object.entries(ERROR_CLASSES) as [ErrorCode, new (m: string) => SynholdError][]) {
    const e = new C('boom');
    assert.ok(e instanceof SynholdError && e instanceof Error);
    assert.equal(e.code, code);
    assert.equal(e.name, ERROR_CODES[code].class);
    assert.equal(e.message, 'boom');
    assert.equal(e.cliExitCode, EXIT[ERROR_CODES[code].exit]);
    assert.equal((lib as Record<string, unknown>)[e.name], C, `${e.name} is exported by 'synhold'`);
  }
  assert.equal(new lib.BusyError('x').cliExitCode, 4);
  assert.equal(new lib.NotSetUpError('x').cliExitCode, 3);
  assert.equal(new lib.ConfigError('x').cliExitCode, 2);
});

test('errors: every class in the table is exported by the library', () => {
  for (const e of Object.values(ERROR_CODES)) assert.equal(typeof (lib as Record<string, unknown>)[e.class], 'function', `${e.class} is exported by 'synhold'`);
});

test('errors: an error from another process (daemon, buffer owner) is rebuilt with its class and code; an unknown code is an InternalError', () => {
  for (const code of Object.keys(ERROR_CODES) as ErrorCode[]) {
    const e = errorFromWire(code, 'm');
    assert.equal(e.code, code);
    const C = ERROR_CLASSES[code];
    if (C) assert.ok(e instanceof C, `${code} rebuilt as ${e.name}`);
  }
  for (const bad of ['ERR_NOPE', undefined, 42, '__proto__']) {
    const e = errorFromWire(bad, 'm');
    assert.ok(e instanceof InternalError, String(bad));
    assert.equal(e.code, 'ERR_INTERNAL');
  }
});

test('errors: docs/ERRORS.md is what scripts/errors-doc.mjs prints from the table', () => {
  const r = spawnSync(process.execPath, [join(root, 'scripts', 'errors-doc.mjs')], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(readFileSync(join(root, 'docs', 'ERRORS.md'), 'utf8'), r.stdout, 'run: node scripts/errors-doc.mjs > docs/ERRORS.md');
});
