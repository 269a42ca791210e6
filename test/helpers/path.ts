/** PATHs for "this program is not installed" tests, without uninstalling anything. */
import { existsSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A directory of symlinks to every program of this process's PATH except the
 * hidden ones, the first of each name winning as in a PATH lookup. Use it as PATH;
 * call cleanup() when done.
 */
export function pathWithout(hidden: readonly string[]): { path: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'synhold-path-'));
  for (const d of (process.env.PATH ?? '').split(':')) {
    if (!d || !existsSync(d)) continue;
    for (const name of readdirSync(d)) {
      if (hidden.includes(name) || existsSync(join(dir, name))) continue;
      symlinkSync(join(d, name), join(dir, name));
    }
  }
  return { path: dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
