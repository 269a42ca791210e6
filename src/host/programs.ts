/**
 * The host programs synhold itself runs (never on the hold path: setup, teardown,
 * status and --netns plumbing only), found before they are needed, so a missing
 * one is one clear error naming its Debian package instead of an ENOENT deep in a
 * spawn - or, worse, a step silently skipped. scripts/programs.txt lists the same
 * programs (and those the tests run) for the installer.
 */
import { accessSync, constants as fsConstants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { SynholdError } from '../model/errors.js';

/** The Debian package of each program synhold runs. */
export const PROGRAM_PACKAGES = {
  'iptables-nft': 'iptables',
  'iptables-legacy': 'iptables',
  'ip6tables-nft': 'iptables',
  'ip6tables-legacy': 'iptables',
  nsenter: 'util-linux',
  unshare: 'util-linux',
  cat: 'coreutils',
  sh: 'dash',
} as const;

export type Program = keyof typeof PROGRAM_PACKAGES;

/** A program synhold needs is not installed. */
export class ProgramMissingError extends SynholdError {
  readonly program: string;
  readonly debianPackage: string;
  constructor(program: Program, why: string) {
    const pkg = PROGRAM_PACKAGES[program];
    super('ERR_PROGRAM_MISSING', `${program} is not installed (needed ${why}): install it (Debian: apt-get install ${pkg})`);
    this.program = program;
    this.debianPackage = pkg;
  }
}

const found = new Map<string, string | undefined>();

/** The program's path in PATH (as execvp would find it), or undefined. */
export function findProgram(name: string, path = process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin'): string | undefined {
  const key = `${path}\0${name}`;
  if (found.has(key)) return found.get(key);
  let hit: string | undefined;
  for (const dir of path.split(delimiter)) {
    if (!dir) continue;
    try {
      accessSync(join(dir, name), fsConstants.X_OK);
      hit = join(dir, name);
      break;
    } catch {
      /* not here */
    }
  }
  found.set(key, hit);
  return hit;
}

/** What the program's absence means, for a list of reasons why a backend cannot work: `the X program (Debian package P)`. */
export function describeMissing(e: ProgramMissingError): string {
  return `the ${e.program} program (Debian package ${e.debianPackage})`;
}

/** Throws ProgramMissingError unless every program is installed; `why` completes "needed ...". */
export function requirePrograms(programs: readonly Program[], why: string): void {
  for (const p of programs) if (findProgram(p) === undefined) throw new ProgramMissingError(p, why);
}
