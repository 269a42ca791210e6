/**
 * docs/API.md is generated (scripts/api-doc.mjs, the TypeScript compiler over
 * src/index.ts's exports): regenerated here into a temporary file, it must equal
 * the committed one byte for byte. And every exported function and class says
 * what it is on the command line: its doc comment, or the doc comment on the
 * export statement of src/index.ts that exports it (a note for the whole
 * statement, printed once atop its section), names its CLI or tc equivalent.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../../', import.meta.url));

interface Item {
  name: string;
  kind: string;
  source: string;
  doc: string;
  note: string;
}

/** `CLI equivalent:` / `CLI equivalents:`, the vishvananda form `Equivalent to:`, or a quoted `tc ...` / `synhold ...` command. */
const NAMES_EQUIVALENT = /\bCLI equivalents?\b|\bEquivalent to:|`(?:tc|synhold)\b[^`]*`/;

function generate(): { markdown: string; items: Item[] } {
  const dir = mkdtempSync(join(tmpdir(), 'synhold-api-doc-'));
  try {
    const out = join(dir, 'API.md');
    const r = spawnSync(process.execPath, [join(root, 'scripts/api-doc.mjs'), '--out', out, '--json'], { cwd: root, encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, `scripts/api-doc.mjs failed: ${r.stderr}`);
    return { markdown: readFileSync(out, 'utf8'), items: JSON.parse(r.stdout) as Item[] };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const generated = generate();

test('docs/API.md is current: regenerated from src/index.ts, byte for byte', () => {
  const committed = readFileSync(join(root, 'docs/API.md'), 'utf8');
  if (committed === generated.markdown) return;
  const a = committed.split('\n');
  const b = generated.markdown.split('\n');
  const first = a.findIndex((line, i) => line !== b[i]);
  const at = first < 0 ? Math.min(a.length, b.length) : first;
  assert.fail(
    `docs/API.md is not what node scripts/api-doc.mjs writes; run it and commit the result.\n` +
      `first difference at line ${at + 1}:\n  committed: ${JSON.stringify(a[at])}\n  generated: ${JSON.stringify(b[at])}`,
  );
});

test('the generator saw every runtime export of src/index.ts, in its source order', async () => {
  const runtime = Object.keys(await import(join(root, 'dist/src/index.js'))).sort();
  const documented = generated.items.filter((i) => i.kind === 'function' || i.kind === 'class' || i.kind === 'const').map((i) => i.name);
  assert.deepEqual([...documented].sort(), runtime);
  assert.equal(generated.items[0]?.name, 'setup', 'the first export statement of index.ts comes first');
  assert.equal(new Set(generated.items.map((i) => i.name)).size, generated.items.length, 'each export once');
});

test('every exported function and class has a doc comment that names its CLI or tc equivalent', () => {
  const callables = generated.items.filter((i) => i.kind === 'function' || i.kind === 'class');
  assert.ok(callables.length >= 18, `only ${callables.length} functions and classes found`);
  const missing = callables
    .filter((i) => !`${i.doc}${i.note}`.trim() || !NAMES_EQUIVALENT.test(`${i.doc}\n${i.note}`))
    .map((i) => `${i.kind} ${i.name} (${i.source}): ${`${i.doc}${i.note}`.trim() ? 'names no CLI or tc equivalent' : 'no doc comment'}`);
  // Each has a comment of its own, beside its code, besides any note on index.ts's export statement.
  const noteOnly = callables.filter((i) => !i.doc.trim()).map((i) => `${i.kind} ${i.name} (${i.source})`);
  assert.deepEqual(noteOnly, [], 'documented only by a note on their export statement in src/index.ts');
  assert.deepEqual(
    missing,
    [],
    `exports without a doc comment naming their CLI or tc equivalent ("CLI equivalent: ...", "Equivalent to: \`tc ...\`"):\n${missing.join('\n')}`,
  );
});

test('the check itself: a doc comment that names nothing is caught, each accepted form passes', () => {
  assert.ok(!NAMES_EQUIVALENT.test('One line for people.'));
  assert.ok(!NAMES_EQUIVALENT.test('synhold as a library'));
  assert.ok(NAMES_EQUIVALENT.test('CLI equivalent: `synhold release`.'));
  assert.ok(NAMES_EQUIVALENT.test('Equivalent to: `tc qdisc del dev DEV`.'));
  assert.ok(NAMES_EQUIVALENT.test('what `synhold setup --limit BYTES` reads'));
});
