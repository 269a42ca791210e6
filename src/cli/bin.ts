#!/usr/bin/env node
/**
 * The `synhold` executable (bundled alone into dist/synhold.cjs): runs the CLI bundle
 * (dist/cli.cjs) from a V8 code cache when one is there.
 *
 * Why: protect runs once per reload, and compiling the 300 KB bundle is a fixed part of its cost
 * that Node.js's own start (`node -e 0`, protect's yardstick) does not pay. A code cache made at the
 * end of a protect run holds the bytecode of every function that run compiled, so the next run
 * deserializes instead of parsing and compiling: measured side by side, 83.5 -> 76.2 ms on the host
 * and 539 -> 510 ms in the kernel lab (docs/PROTECT-COST.md). Node.js 22's module.enableCompileCache
 * does the same for every module; Node.js 20 has only vm.Script's cachedData.
 *
 * Where: SYNHOLD_RUN_DIR (default /run/synhold, synhold's own root-only state directory)/code-cache,
 * one file per bundle and Node.js build, named by the bundle's size, mtime and inode and by Node.js's
 * version and architecture. V8 itself rejects a cache from another V8, other flags or a corrupt file
 * (a checksum), but it checks the source only by length, hence the bundle's identity in the name.
 * Nothing is required of it: no cache, an unreadable or rejected one, or a directory that cannot be
 * written (a read-only /run) mean a normal compile. A cache file is used only if it belongs to this
 * user and nobody else may write it, since it becomes code run as this user.
 * SYNHOLD_CODE_CACHE=0 turns it off.
 */
import { closeSync, fstatSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import Module from 'node:module';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { Script } from 'node:vm';

// V8 checks a code cache's checksum only when asked (not by default in Node.js 20's release build):
// without it a damaged file crashes the process (SIGSEGV, measured by test/cli/code-cache), with
// it the cache is rejected and the bundle compiled. Set before any cache is made or read, so both
// see the same flags (a cache made under other flags is rejected, too).
setFlagsFromString('--verify-snapshot-checksum');

/** The hook the CLI calls after a protect run (src/cli/code-cache.ts). */
const SAVE_HOOK = Symbol.for('synhold.saveCodeCache');

const cli = join(__dirname, 'cli.cjs');
const enabled = process.env.SYNHOLD_CODE_CACHE !== '0';
const dir = join(process.env.SYNHOLD_RUN_DIR ?? '/run/synhold', 'code-cache');

function cacheName(): string | undefined {
  try {
    const st = statSync(cli);
    return `cli-${process.version}-${process.arch}-${st.size}-${Math.trunc(st.mtimeMs)}-${st.ino}.v8`;
  } catch {
    return undefined;
  }
}

/** The cache's bytes, if it is there and safe to trust (ours, writable by nobody else). */
function readCache(file: string): Buffer | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r');
    const st = fstatSync(fd);
    const uid = process.geteuid?.() ?? st.uid;
    if (!st.isFile() || st.uid !== uid || (st.mode & 0o022) !== 0) return undefined;
    return readFileSync(fd);
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function writeCache(name: string, data: Buffer): void {
  const tmp = join(dir, `.${name}.${process.pid}`);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileSync(tmp, data, { mode: 0o600 });
    renameSync(tmp, join(dir, name));
    // Caches of an earlier bundle or Node.js are never read again.
    for (const f of readdirSync(dir)) if (f !== name && f.startsWith('cli-')) unlinkSync(join(dir, f));
  } catch {
    // A read-only or full /run: the next run compiles, as without a cache. A partial file goes.
    try {
      unlinkSync(tmp);
    } catch {
      // never written
    }
  }
}

// `synhold bench` imports the bench package (ESM) with import(). Code run by a vm.Script has no
// loader for that (it would need vm's experimental module support, and code from a cache loses even
// that), so the import runs here, in a module Node.js itself loaded (src/cli/code-cache.ts).
(globalThis as Record<symbol, unknown>)[Symbol.for('synhold.importEsm')] = (specifier: string) => import(specifier);

let source = readFileSync(cli, 'utf8');
// The bundle's shebang is not valid inside Module.wrap's function.
if (source.startsWith('#!')) source = `//${source.slice(2)}`;
const name = enabled ? cacheName() : undefined;
const cached = name ? readCache(join(dir, name)) : undefined;
const script = new Script(Module.wrap(source), {
  filename: cli,
  ...(cached ? { cachedData: cached } : {}),
});
// SYNHOLD_DEBUG: say what became of the cache (test/cli/code-cache checks it is used).
if (process.env.SYNHOLD_DEBUG) {
  const state = !name ? 'off' : !cached ? 'none' : script.cachedDataRejected ? 'rejected' : 'used';
  process.stderr.write(`synhold: code cache ${state}${name ? ` (${join(dir, name)})` : ''}\n`);
}
if (name && (!cached || script.cachedDataRejected)) {
  // Made at the end of a run, so that it holds what the run compiled, not only the top level.
  (globalThis as Record<symbol, unknown>)[SAVE_HOOK] = () => writeCache(name, script.createCachedData());
}
const mod = new Module(cli, module);
mod.filename = cli;
mod.loaded = true;
const wrapper = script.runInThisContext() as (exports: unknown, require: NodeJS.Require, module: Module, filename: string, dirname: string) => void;
wrapper.call(mod.exports, mod.exports, createRequire(cli), mod, cli, __dirname);
