/**
 * The iptables rules that bring a buffer's packets to its NFQUEUE, per IP family:
 *
 *   raw OUTPUT  -o DEV (egress) or raw PREROUTING -i DEV (ingress), inserted first:
 *     -p PROTO [-s SRC] [-d DST] -m PROTO [--sport P] [--dport P] [--tcp-flags MASK SET]
 *       -m comment --comment synhold:buffer:Q:fwd -j synhold-buf-Q      (and :rev, mirrored, for --direction both)
 *   synhold-buf-Q (a chain of the buffer's own):
 *     -m comment --comment synhold:buffer:Q -j NFQUEUE --queue-num Q --queue-bypass
 *
 * Why this shape:
 * - Only the jumps match, so every other packet is untouched: it crosses two
 *   non-matching rules and goes on.
 * - Egress is raw OUTPUT, not PREROUTING as protect's SYN rule is: a packet queued
 *   there still belongs to its socket (on lo, PREROUTING sees a copy the socket has
 *   let go), so TCP does not retransmit what the buffer holds (TCPSpuriousRtxHostQueues;
 *   measured in test/kernel/nfqueue.test.ts). raw is before conntrack, so a held
 *   packet has not been seen by it yet.
 * - The NFQUEUE rule sits alone in the chain, so the watchdog can stop all steering
 *   with one short command, `iptables -t raw -F synhold-buf-Q` (its argv must be
 *   short: native/watchdog.c takes 4 commands of 32 words), and then remove the
 *   jumps and the chain with `iptables-restore --noflush FILE`, the deletions
 *   written to a file at start. A flushed chain is harmless: the jumps lead nowhere.
 * - --queue-bypass: once the watchdog has unbound the queue, packets pass even
 *   before the flush ran.
 * - Installed and removed with iptables-restore (one process, one atomic change
 *   per family): a failure leaves nothing half-installed.
 * - The queue number is in every tag, so one buffer's rules are found (and a dead
 *   one's removed) without touching any other rule, protect's included.
 */
import { writeFileSync } from 'node:fs';
import { netnsPath } from '../netlink/socket.js';
import { formatPrefix, type IpFamily } from '../model/prefix.js';
import { detectIptables, Iptables, runCommand, splitRuleLine, type IptablesBackend } from '../netfilter/iptables.js';
import { checkTag, RULE_TAG_PREFIX } from '../netfilter/rules.js';
import { flowsOf, type BufferFilter, type Flow } from './filter.js';

const TABLE = 'raw';

/** The rules of one family, as iptables-restore input. */
export interface FamilyRules {
  family: IpFamily;
  /** Creates the chain, its NFQUEUE rule and the jumps. */
  add: string;
  /** Removes the jumps and the chain (the file the watchdog runs). */
  del: string;
}

export interface BufferSteering {
  queue: number;
  chain: string;
  iptables: IptablesBackend;
  families: FamilyRules[];
}

export function chainName(queue: number): string {
  return `synhold-buf-${queue}`;
}

export function bufferTag(queue: number, way?: Flow['way']): string {
  return checkTag(`${RULE_TAG_PREFIX}buffer:${queue}${way ? `:${way}` : ''}`);
}

function jumpSpec(f: BufferFilter, flow: Flow, queue: number): string[] {
  const spec = [f.at === 'egress' ? '-o' : '-i', f.dev, '-p', f.proto];
  if (flow.src) spec.push('-s', formatPrefix(flow.src));
  if (flow.dst) spec.push('-d', formatPrefix(flow.dst));
  const match: string[] = [];
  if (flow.sport !== undefined) match.push('--sport', String(flow.sport));
  if (flow.dport !== undefined) match.push('--dport', String(flow.dport));
  if (f.tcpFlags) match.push('--tcp-flags', flagList(f.tcpFlags.mask), flagList(f.tcpFlags.set));
  if (match.length) spec.push('-m', f.proto, ...match);
  spec.push('-m', 'comment', '--comment', bufferTag(queue, flow.way), '-j', chainName(queue));
  return spec;
}

/** iptables' flag list: `SYN,ACK`, or `NONE`. */
function flagList(bits: number): string {
  const names = (['FIN', 'SYN', 'RST', 'PSH', 'ACK', 'URG', 'ECE', 'CWR'] as const).filter((_, i) => bits & (1 << i));
  return names.length ? names.join(',') : 'NONE';
}

/** The rules for a filter, without touching anything (pure: bad input fails before this). */
export function buildSteering(f: BufferFilter, queue: number, iptables: IptablesBackend): BufferSteering {
  const chain = chainName(queue);
  const hook = f.at === 'egress' ? 'OUTPUT' : 'PREROUTING';
  const byFamily = new Map<IpFamily, Flow[]>();
  for (const flow of flowsOf(f)) byFamily.set(flow.family, [...(byFamily.get(flow.family) ?? []), flow]);
  const families: FamilyRules[] = [];
  for (const [family, flows] of byFamily) {
    const jumps = flows.map((flow) => jumpSpec(f, flow, queue).join(' '));
    const nfq = `-m comment --comment ${bufferTag(queue)} -j NFQUEUE --queue-num ${queue} --queue-bypass`;
    families.push({
      family,
      add: ['*raw', `:${chain} - [0:0]`, `-A ${chain} ${nfq}`, ...jumps.map((j) => `-I ${hook} 1 ${j}`), 'COMMIT', ''].join('\n'),
      del: ['*raw', ...jumps.map((j) => `-D ${hook} ${j}`), `-F ${chain}`, `-X ${chain}`, 'COMMIT', ''].join('\n'),
    });
  }
  return { queue, chain, iptables, families };
}

/** Picks iptables-nft or -legacy as setup does (a real rule in a throwaway namespace). */
export async function detectBackend(f: BufferFilter): Promise<IptablesBackend> {
  const families = [...new Set(flowsOf(f).map((x) => x.family))];
  const first = await detectIptables({ family: families[0]!, need: 'nfqueue' });
  return first.backend;
}

function restoreBin(family: IpFamily, backend: IptablesBackend): string {
  return `${family === 6 ? 'ip6tables' : 'iptables'}-${backend}-restore`;
}

/** `iptables-restore --noflush FILE`, inside the namespace if there is one: for us, and as the watchdog's command. */
export function restoreArgv(family: IpFamily, backend: IptablesBackend, file: string, netns?: string): string[] {
  const argv = [restoreBin(family, backend), '-w', '5', '--noflush', file];
  return netns === undefined ? argv : ['nsenter', `--net=${netnsPath(netns)}`, ...argv];
}

/** `iptables -t raw -F synhold-buf-Q`: the watchdog's first command, after which nothing is steered to the queue. */
export function flushArgv(s: BufferSteering, family: IpFamily, netns?: string): string[] {
  return new Iptables({ backend: s.iptables, family, netns }).commandLine(['-t', TABLE, '-F', s.chain]);
}

/** Where each family's rule files live (written before anything is installed). */
export interface RuleFiles {
  add(family: IpFamily): string;
  del(family: IpFamily): string;
}

export function writeRuleFiles(s: BufferSteering, files: RuleFiles): void {
  for (const r of s.families) {
    writeFileSync(files.add(r.family), r.add, { mode: 0o600 });
    writeFileSync(files.del(r.family), r.del, { mode: 0o600 });
  }
}

/** Installs every family's rules, each atomically; on failure removes the families already in and rethrows. */
export async function installSteering(s: BufferSteering, files: RuleFiles, netns?: string): Promise<void> {
  const done: IpFamily[] = [];
  try {
    for (const r of s.families) {
      await runCommand(restoreArgv(r.family, s.iptables, files.add(r.family), netns), { hintFor: restoreBin(r.family, s.iptables) });
      done.push(r.family);
    }
  } catch (e) {
    for (const family of done) await removeSteering(s.queue, s.iptables, family, netns).catch(() => undefined);
    await Promise.all(s.families.map((r) => tidy(s.iptables, r.family, netns)));
    throw e;
  }
}

/**
 * Removes everything tagged with this queue's buffer tag, and its chain, from one
 * family's raw table, then the table itself if iptables-nft left it empty: by
 * tag rather than from the file, so it also clears what a dead buffer left, or
 * a half-done removal. Touches no other rule. Returns how many rules it removed.
 */
export async function removeSteering(queue: number, backend: IptablesBackend, family: IpFamily, netns?: string): Promise<number> {
  const ipt = new Iptables({ backend, family, netns });
  const tag = bufferTag(queue);
  let removed = 0;
  for (const line of await ipt.listRules(TABLE)) {
    const args = splitRuleLine(line);
    const c = args.indexOf('--comment');
    const comment = c >= 0 ? args[c + 1] : undefined;
    if (args[0] !== '-A' || (comment !== tag && !comment?.startsWith(`${tag}:`))) continue;
    const r = await ipt.run(['-t', TABLE, '-D', ...args.slice(1)], [1]);
    if (r.exitCode === 0) removed++;
  }
  await ipt.deleteChain(TABLE, chainName(queue));
  await tidy(backend, family, netns);
  return removed;
}

async function tidy(backend: IptablesBackend, family: IpFamily, netns?: string): Promise<void> {
  await new Iptables({ backend, family, netns }).tidyTable(TABLE);
}

/** Whether any rule of this buffer is in the family's raw table (for a stale buffer's cleanup). */
export async function hasSteering(queue: number, backend: IptablesBackend, family: IpFamily, netns?: string): Promise<boolean> {
  const ipt = new Iptables({ backend, family, netns });
  if (await ipt.chainExists(TABLE, chainName(queue))) return true;
  const tag = bufferTag(queue);
  return (await ipt.listRules(TABLE)).some((l) => l.includes(`"${tag}"`) || l.includes(`"${tag}:`) || l.includes(` ${tag} `));
}
