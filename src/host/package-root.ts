/**
 * The synhold package's root directory (where package.json and build/ are),
 * found by walking up from this module. The same code runs as separate files
 * (dist/src/...) and bundled into one (dist/cli.cjs), at different depths,
 * so nothing may count '..'s from import.meta.url.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

export function packageRoot(): string {
  if (cached) return cached;
  // Bundled (CommonJS), __dirname is at hand; parsing a file URL costs a module load (tens of ms in the kernel lab).
  const start = typeof __dirname === 'string' ? __dirname : dirname(fileURLToPath(import.meta.url));
  let dir = start;
  for (;;) {
    const pj = join(dir, 'package.json');
    if (existsSync(pj)) {
      try {
        if ((JSON.parse(readFileSync(pj, 'utf8')) as { name?: string }).name === 'synhold') return (cached = dir);
      } catch {
        // not ours; keep walking
      }
    }
    const up = dirname(dir);
    if (up === dir) throw new Error(`cannot find synhold's package.json above ${start}`);
    dir = up;
  }
}

/** The package's version (synhold --version). */
export function packageVersion(): string {
  return (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
}
