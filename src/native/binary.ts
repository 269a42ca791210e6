/**
 * Where synhold's two native binaries are: the addon (synhold_native.node) and
 * the watchdog program. A build from source (build/Release, node-gyp: a
 * checkout, or an install that had to compile) wins; otherwise the prebuilt
 * one the npm package ships for this platform (prebuilds/<platform>-<arch>/,
 * made by scripts/prebuild.sh), so that a host without a compiler runs synhold.
 */
import { existsSync, openSync, readSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { NativeMissingError } from '../model/errors.js';
import { packageRoot } from '../host/package-root.js';

export type NativeBinary = 'synhold_native.node' | 'synhold-watchdog';

/** ELF e_machine of each architecture Node.js names (what a wrong-architecture binary is told apart by). */
const ELF_MACHINE: Record<string, number> = { x64: 0x3e, arm64: 0xb7, ia32: 0x03, arm: 0x28 };

/** The path of a native binary for this process, or a NativeMissingError that says what to do. */
export function nativeBinary(name: NativeBinary): string {
  const root = packageRoot();
  const built = join(root, 'build', 'Release', name);
  if (existsSync(built)) return built;
  const platform = `${process.platform}-${process.arch}`;
  const prebuilt = join(root, 'prebuilds', platform, name);
  if (existsSync(prebuilt)) {
    const machine = elfMachine(prebuilt);
    if (machine !== undefined && ELF_MACHINE[process.arch] !== undefined && machine !== ELF_MACHINE[process.arch]) {
      throw new NativeMissingError(
        `${prebuilt} is not built for ${platform} (ELF machine 0x${machine.toString(16)}); rebuild from source: \`npm rebuild synhold\` (needs cc, make and python3)`,
      );
    }
    return prebuilt;
  }
  throw new NativeMissingError(
    `synhold's ${name} is neither built (${built}) nor shipped prebuilt for ${platform}; build it from source: \`npm rebuild synhold\` (needs cc, make and python3)`,
  );
}

/** e_machine of an ELF file, undefined if it is not one. */
function elfMachine(path: string): number | undefined {
  const fd = openSync(path, 'r');
  try {
    const h = Buffer.alloc(20);
    if (readSync(fd, h, 0, 20, 0) < 20 || h.readUInt32BE(0) !== 0x7f454c46) return undefined;
    return h[5] === 2 ? h.readUInt16BE(18) : h.readUInt16LE(18);
  } finally {
    closeSync(fd);
  }
}
