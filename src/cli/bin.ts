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
 * version and architecture. V8 itself rejects a cache from another V8 or other flags, but it checks
 * the source only by length, hence the bundle's identity in the name; and it checks the payload's
 * checksum only under --verify-snapshot-checksum, which costs a load of node:v8 (about 3 ms of every
 * run) to set. So the file carries its own checksum (native/checksum.c): MAGIC, then the
 * checksum64 of V8's bytes (8 bytes, little-endian), then V8's bytes. A file that fails it is
 * never given to V8 (a damaged cache crashed node with SIGSEGV: test/cli/code-cache).
 * Nothing is required of it: no cache, an unreadable or rejected one, or a directory that cannot be
 * written (a read-only /run) mean a normal compile. A cache file is used only if it belongs to this
 * user and nobody else may write it, since it becomes code run as this user.
 * SYNHOLD_CODE_CACHE=0 turns it off.
 */
import { closeSync, fstatSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import type ModuleClass from 'node:module';
import { join } from 'node:path';
import { Script } from 'node:vm';
import { native, type NativeAddon } from '../native/addon.js';

/**
 * The CommonJS loader's Module class, as this file's own `module` was made by it: the same class that
 * `require('node:module')` returns, with wrap() and createRequire(). Taken from here because loading
 * node:module also loads the ES module loader and the source-map support (three more built-ins to
 * compile on every run, for nothing this file uses).
 */
const Module = module.constructor as typeof ModuleClass;

/** The hook the CLI calls after a protect run (src/cli/code-cache.ts). */
const SAVE_HOOK = Symbol.for('synhold.saveCodeCache');

/** The file's first bytes: the format of the header in front of V8's bytes. */
const MAGIC = Buffer.from('synhold-code-cache-1\n');
const HEADER = MAGIC.length + 8;

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

/**
 * The addon's checksum, or undefined: without the addon (not built) there is no cache, and the
 * CLI says what is missing when a command needs it. The CLI bundle loads the same file again,
 * which costs a fraction of a millisecond (the library is already mapped).
 */
function addon(): NativeAddon | undefined {
  try {
    const a = native();
    return typeof a.checksum64 === 'function' ? a : undefined;
  } catch {
    return undefined;
  }
}

/**
 * V8's bytes from the cache file: 'none' if it is not there or not safe to trust (ours, writable by
 * nobody else), 'damaged' if its header or checksum is wrong.
 */
function readCache(file: string, checksum: NativeAddon['checksum64']): Buffer | 'none' | 'damaged' {
  let fd: number | undefined;
  let data: Buffer;
  try {
    fd = openSync(file, 'r');
    const st = fstatSync(fd);
    const uid = process.geteuid?.() ?? st.uid;
    if (!st.isFile() || st.uid !== uid || (st.mode & 0o022) !== 0) return 'none';
    data = readFileSync(fd);
  } catch {
    return 'none';
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  if (data.length <= HEADER || !data.subarray(0, MAGIC.length).equals(MAGIC)) return 'damaged';
  const payload = data.subarray(HEADER);
  return data.readBigUInt64LE(MAGIC.length) === checksum(payload) ? payload : 'damaged';
}

function writeCache(name: string, data: Buffer, checksum: NativeAddon['checksum64']): void {
  const tmp = join(dir, `.${name}.${process.pid}`);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const sum = Buffer.alloc(8);
    sum.writeBigUInt64LE(checksum(data));
    writeFileSync(tmp, Buffer.concat([MAGIC, sum, data]), { mode: 0o600 });
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
const checksum = enabled ? addon()?.checksum64 : undefined;
const name = checksum ? cacheName() : undefined;
const read = name && checksum ? readCache(join(dir, name), checksum) : 'none';
const cached = typeof read === 'string' ? undefined : read;
const script = new Script(Module.wrap(source), {
  filename: cli,
  ...(cached ? { cachedData: cached } : {}),
});
// SYNHOLD_DEBUG: say what became of the cache (test/cli/code-cache checks it is used). 'rejected':
// its checksum (ours) or V8 refused it.
if (process.env.SYNHOLD_DEBUG) {
  const state = !name ? 'off' : read === 'damaged' || script.cachedDataRejected ? 'rejected' : !cached ? 'none' : 'used';
  process.stderr.write(`synhold: code cache ${state}${name ? ` (${join(dir, name)})` : ''}\n`);
}
if (name && checksum && (!cached || script.cachedDataRejected)) {
  // Made at the end of a run, so that it holds what the run compiled, not only the top level.
  (globalThis as Record<symbol, unknown>)[SAVE_HOOK] = () => writeCache(name, script.createCachedData(), checksum);
}
const mod = new Module(cli, module);
mod.filename = cli;
mod.loaded = true;
const wrapper = script.runInThisContext() as (exports: unknown, require: NodeJS.Require, module: ModuleClass, filename: string, dirname: string) => void;
wrapper.call(mod.exports, mod.exports, Module.createRequire(cli), mod, cli, __dirname);
