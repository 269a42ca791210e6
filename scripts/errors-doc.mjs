#!/usr/bin/env node
// Writes docs/ERRORS.md from the one table of failures (src/model/errors.ts, built into dist/):
// every code synhold reports, its class and the CLI exit status. Run after `npm run build`:
//   node scripts/errors-doc.mjs > docs/ERRORS.md
// test/unit/errors.test.ts fails when docs/ERRORS.md is not what this prints.
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath, URL } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const { ERROR_CODES, EXIT } = await import(`${root}dist/src/model/errors.js`);
// A class's doc comment, wherever in src/ the class is defined.
const sources = readdirSync(`${root}src`, { recursive: true })
  .filter((f) => f.endsWith('.ts'))
  .map((f) => ({ file: `src/${f}`, text: readFileSync(`${root}src/${f}`, 'utf8') }));
const docOf = (cls) => {
  for (const { file, text } of sources) {
    const m = new RegExp(String.raw`/\*\*((?:(?!\*/)[\s\S])*)\*/\s*export class ${cls} extends`).exec(text);
    if (!m) continue;
    const doc = m[1]
      .replace(/\n\s*\*\s?/g, ' ')
      .replace(/\s+/g, ' ')
      .trim();
    return file === 'src/model/errors.ts' ? doc : `${doc} (${file})`;
  }
  throw new Error(`no doc comment for class ${cls}`);
};
const lines = [
  '# Errors',
  '',
  'Every failure synhold reports has a stable `code` and a class (`import { BusyError } from',
  "'synhold'`; all extend `SynholdError`). The CLI prints one line and exits with the status below",
  "(`protect` exits 125 for any failure of its own, and otherwise with its command's status).",
  'Generated from `src/model/errors.ts` by `node scripts/errors-doc.mjs > docs/ERRORS.md`.',
  '',
  `Exit statuses: ${Object.entries(EXIT)
    .map(([k, v]) => `${v} ${k}`)
    .join(', ')}.`,
  '',
  '| code | class | exit | what it means |',
  '|---|---|---|---|',
];
for (const [code, e] of Object.entries(ERROR_CODES)) lines.push(`| \`${code}\` | \`${e.class}\` | ${EXIT[e.exit]} | ${docOf(e.class).replace(/\|/g, '\\|')} |`);
process.stdout.write(`${lines.join('\n')}\n`);
