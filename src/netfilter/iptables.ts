/**
 * Installing and removing synhold's iptables rules by running iptables itself.
 * Setup and teardown only: the hold path (nfqueue) never spawns anything. The
 * one step iptables cannot do, removing the table iptables-nft leaves behind,
 * goes over nfnetlink in-process (nf_tables.ts): synhold never runs `nft`, which
 * hosts with iptables need not have.
 *
 * Which iptables: iptables-nft (nf_tables underneath) or iptables-legacy
 * (x_tables). detectIptables() tries nft first, then legacy, each with a real
 * write - the very rule synhold needs - in a throwaway network namespace
 * (`unshare --net`), because a read such as `-t raw -S` proves nothing: it
 * succeeds on kernels where nf_tables is loaded but lacks the ip family
 * (TABLE_ADD fails, EOPNOTSUPP), and with legacy it instantiates the raw table in
 * the namespace it runs in. The probe leaves nothing behind anywhere.
 *
 * Measured on this project's machines (see test/kernel/iptables.test.ts):
 * - the host kernel (6.18): both work; nft is picked.
 * - the kernel lab (User-Mode Linux 7.2.7 from Debian unstable): neither - it
 *   lacks CONFIG_NF_TABLES_IPV4/IPV6 and CONFIG_NETFILTER_XTABLES_LEGACY (so no
 *   iptable_raw). UML 6.1 had the legacy tables; that one does not boot on AMX CPUs.
 *
 * Rules are idempotent (`-C` before `-I`/`-A`, `-D` while `-C` finds one) and
 * tagged with a `synhold:` comment, so removal touches nothing else. With nft,
 * iptables creates the table and base chain on first use and leaves them behind
 * when the last rule goes; tidyTable() removes them again when, and only when,
 * the table holds nothing at all, so `iptables-save` and `nft list ruleset` read
 * as before.
 */
import { SynholdError } from '../model/errors.js';
import { NETLINK_NETFILTER, NetlinkSocket, netnsPath } from '../netlink/socket.js';
import { deleteTableIfEmpty, listRuleExpressions } from './nf_tables.js';
import { NFPROTO_IPV4, NFPROTO_IPV6 } from './nfnetlink.js';
import type { IpFamily } from '../model/prefix.js';
import { findProgram, ProgramMissingError, requirePrograms, type Program } from '../host/programs.js';
import { RULE_TAG_PREFIX, RuleSpecError, formatRule, nfqueueRule, type IptablesRule } from './rules.js';

export type IptablesBackend = 'nft' | 'legacy';

export interface CommandResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

const STDERR_TAIL_LINES = 6;

function lacksNfqueueTarget(stderr: string): boolean {
  return /NFQUEUE/.test(stderr) && /not supported|Couldn't load target|No chain\/target\/match|does not exist/i.test(stderr);
}

/** What the user can do about a failed iptables command, from its stderr (and the spawn error). */
export function iptablesHint(bin: string, stderr: string, spawnCode?: string): string | undefined {
  if (spawnCode === 'ENOENT' && bin !== 'unshare' && bin !== 'nsenter') {
    return `${bin} is not installed: install the iptables package (it provides iptables-nft and iptables-legacy; Debian: apt-get install iptables)`;
  }
  const missing = /failed to execute (\S+): No such file or directory/.exec(stderr);
  if (missing) return iptablesHint(missing[1] ?? bin, '', 'ENOENT');
  if (spawnCode === 'ENOENT' && bin === 'unshare') return 'unshare (util-linux) is not installed; it runs the iptables probe in a throwaway network namespace';
  if (spawnCode === 'ENOENT' && bin === 'nsenter') return 'nsenter (util-linux) is not installed; it runs iptables in another network namespace';
  if (/you must be root|Permission denied/i.test(stderr)) return 'iptables needs root (CAP_NET_ADMIN)';
  if (/Could not fetch rule set generation id/.test(stderr)) {
    return 'this kernel lacks nf_tables (CONFIG_NF_TABLES) for iptables-nft: load nf_tables or use iptables-legacy';
  }
  if (/TABLE_ADD failed \(Operation not supported\)/.test(stderr)) {
    return "this kernel's nf_tables lacks the ip/ip6 family (CONFIG_NF_TABLES_IPV4/IPV6) for iptables-nft: use iptables-legacy";
  }
  if (/can't initialize ip6?tables table `raw'/.test(stderr)) {
    return 'this kernel lacks the legacy raw table (CONFIG_IP_NF_RAW / CONFIG_IP6_NF_RAW, and CONFIG_NETFILTER_XTABLES_LEGACY on 6.x): modprobe iptable_raw, or use iptables-nft';
  }
  // Missing extensions last: iptables warns about them even when the real failure is the table (above).
  if (lacksNfqueueTarget(stderr)) {
    return 'this kernel lacks the NFQUEUE target (CONFIG_NETFILTER_XT_TARGET_NFQUEUE and CONFIG_NETFILTER_NETLINK_QUEUE): modprobe xt_NFQUEUE nfnetlink_queue';
  }
  if (/Extension tcp revision 0 not supported/.test(stderr)) {
    return 'this kernel lacks the tcp match (xt_tcpudp, CONFIG_NETFILTER_XTABLES): modprobe xt_tcpudp';
  }
  if (/comment/.test(stderr) && /not supported|Couldn't load match|No chain\/target\/match/i.test(stderr)) {
    return 'this kernel lacks the comment match (CONFIG_NETFILTER_XT_MATCH_COMMENT): modprobe xt_comment';
  }
  if (/xtables lock/.test(stderr)) return 'another iptables command held the xtables lock for too long: retry';
  return undefined;
}

/** An iptables command that failed: what ran, its exit code or signal, the tail of its stderr, and a hint (execa's shape). */
export class IptablesError extends SynholdError {
  readonly command: readonly string[];
  readonly exitCode?: number;
  readonly signal?: string;
  readonly timedOut: boolean;
  readonly stderr: string;
  readonly stderrTail: string;
  readonly hint?: string;

  constructor(d: { command: readonly string[]; exitCode?: number; signal?: string; timedOut?: boolean; stderr: string; hint?: string; spawnError?: string }) {
    const tail = d.stderr.trimEnd().split('\n').slice(-STDERR_TAIL_LINES).join('\n').trim();
    const how = d.spawnError
      ? `could not start (${d.spawnError})`
      : d.timedOut
        ? `timed out${d.signal ? ` (killed with ${d.signal})` : ''}`
        : d.signal
          ? `was killed with ${d.signal}`
          : `failed with exit code ${d.exitCode}`;
    let msg = `Command ${how}: ${d.command.join(' ')}`;
    if (tail) msg += `\n${tail}`;
    if (d.hint) msg += `\n- ${d.hint}`;
    // The table errors win over a missing target, as in iptablesHint().
    const lacks = d.hint !== undefined && /NFQUEUE target/.test(d.hint) && lacksNfqueueTarget(d.stderr) ? ('xt_NFQUEUE' as const) : undefined;
    super('ERR_IPTABLES', msg, lacks ? { lacks } : undefined);
    this.command = d.command;
    this.exitCode = d.exitCode;
    this.signal = d.signal;
    this.timedOut = d.timedOut ?? false;
    this.stderr = d.stderr;
    this.stderrTail = tail;
    this.hint = d.hint;
  }

  /** The line of stderr that says what failed (iptables' own error line, not its warnings or usage advice). */
  get summary(): string {
    const lines = this.stderr
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean);
    return (
      lines.find((l) => /^(ip6?tables|iptables-\S+)( v[\d.]+ \([^)]*\))?:/.test(l) || /^ip6?tables: /.test(l)) ??
      lines.find((l) => !/^(Warning:|Try `|Perhaps )/.test(l)) ??
      this.message.split('\n')[0]!
    );
  }
}

/** No iptables backend can install synhold's rule on this kernel; `attempts` says why for each. */
export class IptablesUnavailableError extends SynholdError {
  readonly attempts: readonly { backend: IptablesBackend; error: IptablesError }[];
  constructor(family: IpFamily, attempts: { backend: IptablesBackend; error: IptablesError }[]) {
    const lines = attempts.map((a) => `  ${a.backend}: ${a.error.summary}${a.error.hint ? ` - ${a.error.hint}` : ''}`);
    super('ERR_IPTABLES_UNAVAILABLE', `no working ${family === 6 ? 'ip6tables' : 'iptables'} on this kernel:\n${lines.join('\n')}`);
    this.attempts = attempts;
  }
}

/**
 * Runs a command; resolves with its output when it exits 0, or (with
 * `allowExit`) with any of the listed exit codes. Otherwise throws IptablesError.
 */
export async function runCommand(
  argv: readonly string[],
  opts: { timeoutMs?: number; allowExit?: readonly number[]; hintFor?: string } = {},
): Promise<CommandResult> {
  const [file, ...args] = argv;
  if (!file) throw new Error('runCommand: empty argv');
  const timeoutMs = opts.timeoutMs ?? 15000;
  // Loaded on first use: a hold checks its steering over netlink and never runs iptables.
  const { execFile } = await import('node:child_process');
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (!err) {
        resolve({ stdout, stderr, exitCode: 0 });
        return;
      }
      const e = err as NodeJS.ErrnoException & { code?: string | number; signal?: NodeJS.Signals | null; killed?: boolean };
      const bin = opts.hintFor ?? file;
      if (typeof e.code === 'string') {
        // The spawn itself failed (ENOENT, EACCES...).
        // The hint names the program that could not start (nsenter, unshare or iptables itself).
        reject(new IptablesError({ command: argv, stderr: stderr ?? '', spawnError: e.code, hint: iptablesHint(file, '', e.code) }));
        return;
      }
      const exitCode = typeof e.code === 'number' ? e.code : undefined;
      if (exitCode !== undefined && opts.allowExit?.includes(exitCode)) {
        resolve({ stdout, stderr, exitCode });
        return;
      }
      reject(
        new IptablesError({
          command: argv,
          exitCode,
          signal: e.signal ?? undefined,
          timedOut: e.killed === true && e.signal === 'SIGKILL',
          stderr: stderr ?? '',
          hint: iptablesHint(bin, stderr ?? ''),
        }),
      );
    });
  });
}

/** Splits one line of `iptables -S` output into arguments (it double-quotes what needs it). */
export function splitRuleLine(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inArg = false;
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quoted) {
      if (c === '\\' && i + 1 < line.length) cur += line[++i];
      else if (c === '"') quoted = false;
      else cur += c;
    } else if (c === '"') {
      quoted = true;
      inArg = true;
    } else if (c === ' ' || c === '\t') {
      if (inArg) out.push(cur);
      cur = '';
      inArg = false;
    } else {
      cur += c;
      inArg = true;
    }
  }
  if (inArg) out.push(cur);
  return out;
}

export interface IptablesOptions {
  backend: IptablesBackend;
  family?: IpFamily;
  /** Run inside this network namespace (a name under /run/netns or a path): iptables through nsenter, tidyTable()'s netlink socket opened in it. */
  netns?: string;
  timeoutMs?: number;
}

/** One iptables backend for one address family, optionally in another network namespace. */
export class Iptables {
  readonly backend: IptablesBackend;
  readonly family: IpFamily;
  readonly netns?: string;
  private readonly timeoutMs: number;

  constructor(opts: IptablesOptions) {
    this.backend = opts.backend;
    this.family = opts.family ?? 4;
    this.netns = opts.netns;
    this.timeoutMs = opts.timeoutMs ?? 15000;
  }

  /** `iptables-nft`, `ip6tables-legacy`, ... */
  get bin(): string {
    return `${this.family === 6 ? 'ip6tables' : 'iptables'}-${this.backend}`;
  }

  /** `iptables-nft-save`, ... */
  get saveBin(): string {
    return `${this.bin}-save`;
  }

  private argv(file: string, args: readonly string[]): string[] {
    return this.netns === undefined ? [file, ...args] : ['nsenter', `--net=${netnsPath(this.netns)}`, file, ...args];
  }

  /** The argv run() would run, for a process that must run it without us (the hold's watchdog). */
  commandLine(args: readonly string[]): string[] {
    return this.argv(this.bin, ['-w', '5', ...args]);
  }

  /** Runs `BIN -w 5 ARGS`; `-w` waits for the xtables lock (legacy) and is ignored by nft. */
  run(args: readonly string[], allowExit?: readonly number[]): Promise<CommandResult> {
    return runCommand(this.argv(this.bin, ['-w', '5', ...args]), {
      timeoutMs: this.timeoutMs,
      hintFor: this.bin,
      allowExit,
    });
  }

  private check(rule: IptablesRule): void {
    if (rule.family !== this.family) {
      throw new RuleSpecError(`an IPv${rule.family} rule (${formatRule(rule)}) given to ${this.bin}`);
    }
  }

  /** Whether the rule is there. Equivalent to: `iptables -t T -C CHAIN SPEC` (exit 1: absent, or no such chain). */
  async has(rule: IptablesRule): Promise<boolean> {
    this.check(rule);
    const r = await this.run(['-t', rule.table, '-C', rule.chain, ...rule.spec], [1]);
    return r.exitCode === 0;
  }

  /**
   * Adds the rule unless it is there. `first` (default) inserts it at the top of
   * the chain, so an earlier ACCEPT of someone else's cannot skip it.
   * Equivalent to: `iptables -t T -C CHAIN SPEC || iptables -t T -I CHAIN 1 SPEC`.
   */
  async ensure(rule: IptablesRule, position: 'first' | 'last' = 'first'): Promise<{ added: boolean }> {
    if (await this.has(rule)) return { added: false };
    await this.run(['-t', rule.table, ...(position === 'first' ? ['-I', rule.chain, '1'] : ['-A', rule.chain]), ...rule.spec]);
    return { added: true };
  }

  /**
   * Deletes every copy of the rule (bounded), then, with nft, tidies the table if
   * it is left holding nothing. Equivalent to: `while iptables -t T -C CHAIN SPEC; do iptables -t T -D CHAIN SPEC; done`.
   */
  async remove(rule: IptablesRule, opts: { tidy?: boolean } = {}): Promise<{ removed: number }> {
    let removed = 0;
    for (let i = 0; i < 64 && (await this.has(rule)); i++) {
      await this.run(['-t', rule.table, '-D', rule.chain, ...rule.spec]);
      removed++;
    }
    if (opts.tidy ?? true) await this.tidyTable(rule.table);
    return { removed };
  }

  /** `iptables -t T -S [CHAIN]`, one rule or policy per line. */
  async listRules(table: string, chain?: string): Promise<string[]> {
    const r = await this.run(['-t', table, '-S', ...(chain ? [chain] : [])]);
    return r.stdout.split('\n').filter((l) => l.trim() !== '');
  }

  async chainExists(table: string, chain: string): Promise<boolean> {
    const r = await this.run(['-t', table, '-S', chain], [1]);
    return r.exitCode === 0;
  }

  /** Creates a user chain unless it exists. Equivalent to: `iptables -t T -N CHAIN`. */
  async ensureChain(table: string, chain: string): Promise<{ added: boolean }> {
    if (await this.chainExists(table, chain)) return { added: false };
    await this.run(['-t', table, '-N', chain]);
    return { added: true };
  }

  /** Empties a chain. Equivalent to: `iptables -t T -F CHAIN`. */
  async flushChain(table: string, chain: string): Promise<void> {
    await this.run(['-t', table, '-F', chain]);
  }

  /** Flushes and deletes a user chain if it exists; fails if a rule still jumps to it. Equivalent to: `iptables -t T -F C; iptables -t T -X C`. */
  async deleteChain(table: string, chain: string): Promise<{ removed: boolean }> {
    if (!(await this.chainExists(table, chain))) return { removed: false };
    await this.flushChain(table, chain);
    await this.run(['-t', table, '-X', chain]);
    return { removed: true };
  }

  /** `iptables-save [-t T]`, without its `#` comment lines (timestamps, warnings). */
  async save(table?: string): Promise<string> {
    const r = await runCommand(this.argv(this.saveBin, table ? ['-t', table] : []), { timeoutMs: this.timeoutMs, hintFor: this.saveBin });
    return r.stdout
      .split('\n')
      .filter((l) => !l.startsWith('#'))
      .join('\n');
  }

  /**
   * Removes every rule whose comment starts with `prefix` from every chain of the
   * table, then synhold's own chains (named `synhold-...`), then tidies the table.
   * For teardown after a crash, when nothing remembers which rules were installed.
   */
  async removeTagged(table = 'raw', prefix = RULE_TAG_PREFIX): Promise<{ removed: number; chains: number }> {
    let removed = 0;
    for (const line of await this.listRules(table)) {
      const args = splitRuleLine(line);
      if (args[0] !== '-A') continue;
      const c = args.indexOf('--comment');
      if (c < 0 || !(args[c + 1] ?? '').startsWith(prefix)) continue;
      const r = await this.run(['-t', table, '-D', ...args.slice(1)], [1]);
      if (r.exitCode === 0) removed++;
    }
    let chains = 0;
    for (const line of await this.listRules(table)) {
      const args = splitRuleLine(line);
      if (args[0] === '-N' && args[1]?.startsWith('synhold-')) {
        if ((await this.deleteChain(table, args[1])).removed) chains++;
      }
    }
    await this.tidyTable(table);
    return { removed, chains };
  }

  /**
   * nft only: iptables-nft creates the table and its base chains on first use and
   * never removes them. When the table holds nothing - no rule, no user chain, no
   * set or other object, every policy ACCEPT - delete it (which deletes its base
   * chains too), in-process over nfnetlink and atomically with that check: the
   * kernel refuses the delete if the ruleset changed since it was read (see
   * deleteTableIfEmpty() in nf_tables.ts). Returns whether the table was removed.
   * Equivalent to: `nft list table ip raw`, then, if it shows only empty ACCEPT
   * base chains, `nft delete table ip raw`.
   */
  /**
   * How many rules in the rule's chain carry its tag (`-m comment --comment
   * synhold:...`) and its target: for iptables-nft in-process (one netlink
   * dump, no process), for legacy through `iptables -C`. This is the check a
   * hold makes before it starts, where a process per rule is the cost to avoid.
   */
  async countTagged(rule: IptablesRule): Promise<number> {
    this.check(rule);
    if (this.backend !== 'nft') return (await this.has(rule)) ? 1 : 0;
    const ci = rule.spec.indexOf('--comment');
    const ji = rule.spec.indexOf('-j');
    if (ci < 0 || ji < 0) return (await this.has(rule)) ? 1 : 0;
    const tag = Buffer.from(`${rule.spec[ci + 1]}\0`);
    const target = Buffer.from(rule.spec[ji + 1]!);
    const sock = NetlinkSocket.open(NETLINK_NETFILTER, { netns: this.netns });
    try {
      const rules = await listRuleExpressions(sock, this.family === 6 ? NFPROTO_IPV6 : NFPROTO_IPV4, rule.table, rule.chain);
      return rules.filter((e) => e.includes(tag) && e.includes(target)).length;
    } finally {
      sock.close();
    }
  }

  async tidyTable(table: string): Promise<boolean> {
    if (this.backend !== 'nft') return false;
    const sock = NetlinkSocket.open(NETLINK_NETFILTER, { netns: this.netns });
    try {
      return await deleteTableIfEmpty(sock, this.family === 6 ? NFPROTO_IPV6 : NFPROTO_IPV4, table);
    } finally {
      sock.close();
    }
  }
}

export interface DetectOptions {
  family?: IpFamily;
  netns?: string;
  /** What the rules need: the NFQUEUE target (default) or only DROP. */
  need?: 'nfqueue' | 'drop';
  /** Try only these backends, in this order. Default: nft, then legacy. */
  order?: readonly IptablesBackend[];
  timeoutMs?: number;
}

/**
 * Probes one backend: adds the kind of rule synhold needs in a throwaway network
 * namespace (`unshare --net`), which vanishes with the command. Kernel features
 * are global, so what works there works in every namespace. Throws IptablesError.
 * Equivalent to: `unshare --net iptables-nft -w 5 -t raw -A PREROUTING -p tcp --syn --dport 9 ... -j NFQUEUE ...`.
 */
export async function probeIptables(backend: IptablesBackend, opts: Omit<DetectOptions, 'order' | 'netns'> = {}): Promise<void> {
  const family = opts.family ?? 4;
  const ipt = new Iptables({ backend, family });
  const rule = nfqueueRule({ port: 9, queue: 0, family, tag: `${RULE_TAG_PREFIX}probe` });
  const spec = opts.need === 'drop' ? [...rule.spec.slice(0, rule.spec.indexOf('-j')), '-j', 'DROP'] : [...rule.spec];
  await runCommand(['unshare', '--net', ipt.bin, '-w', '5', '-t', 'raw', '-A', 'PREROUTING', ...spec], {
    timeoutMs: opts.timeoutMs ?? 15000,
    hintFor: ipt.bin,
  });
}

/** Picks the first backend that can install synhold's rule here (nft, then legacy). */
export async function detectIptables(opts: DetectOptions = {}): Promise<Iptables> {
  const order = opts.order ?? (['nft', 'legacy'] as const);
  // No iptables program at all is one clear error, not one failed probe per flavour.
  const bins = order.map((backend) => new Iptables({ backend, family: opts.family }).bin as Program);
  if (!bins.some((b) => findProgram(b) !== undefined)) throw new ProgramMissingError(bins[0]!, 'for the nfqueue and drop backends');
  requirePrograms(['unshare'], 'to probe iptables in a throwaway network namespace');
  const attempts: { backend: IptablesBackend; error: IptablesError }[] = [];
  for (const backend of order) {
    try {
      await probeIptables(backend, opts);
      return new Iptables({
        backend,
        family: opts.family ?? 4,
        netns: opts.netns,
        timeoutMs: opts.timeoutMs,
      });
    } catch (e) {
      if (!(e instanceof IptablesError)) throw e;
      attempts.push({ backend, error: e });
    }
  }
  throw new IptablesUnavailableError(opts.family ?? 4, attempts);
}
