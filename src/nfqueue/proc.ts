/**
 * The kernel's own view of nfnetlink_queue instances: /proc/net/netfilter/nfnetlink_queue
 * (net/netfilter/nfnetlink_queue.c, seq_show). One line per bound queue in the
 * reader's network namespace, nine whitespace-separated columns:
 *
 *   1 queue_number        the queue (iptables --queue-num)
 *   2 peer_portid         netlink port id of the bound socket (our NetlinkSocket.portId)
 *   3 queue_total         packets queued right now, waiting for a verdict
 *   4 copy_mode           0 none, 1 meta, 2 packet
 *   5 copy_range          bytes of each packet copied to user space
 *   6 queue_dropped       dropped because queue_total reached the max length
 *                         (only without NFQA_CFG_F_FAIL_OPEN; with it they were accepted, uncounted)
 *   7 queue_user_dropped  dropped because the message could not be delivered to the
 *                         socket (receive buffer full); likewise accepted with FAIL_OPEN
 *   8 id_sequence         the last packet id handed out (ids start at 1 after bind)
 *   9 (always 1)          a historical use count, printed as a constant
 *
 * A queue with no line is not bound: with `--queue-bypass` its packets pass untouched.
 */
import { readFileSync } from 'node:fs';
import { netnsPath } from '../netlink/socket.js';
import { NfqueueStatsError } from '../model/errors.js';
import { native } from '../native/addon.js';

export const NFNETLINK_QUEUE_PROC = '/proc/net/netfilter/nfnetlink_queue';

export interface KernelQueueStats {
  queue: number;
  peerPortId: number;
  queueTotal: number;
  copyMode: number;
  copyRange: number;
  queueDropped: number;
  userDropped: number;
  idSequence: number;
}

export function parseNfqueueProc(text: string): KernelQueueStats[] {
  const out: KernelQueueStats[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/).map(Number);
    if (f.length < 8 || f.slice(0, 8).some((n) => !Number.isFinite(n))) continue;
    out.push({
      queue: f[0]!,
      peerPortId: f[1]!,
      queueTotal: f[2]!,
      copyMode: f[3]!,
      copyRange: f[4]!,
      queueDropped: f[5]!,
      userDropped: f[6]!,
      idSequence: f[7]!,
    });
  }
  return out;
}

/**
 * Reads the file in the current namespace, or in `netns` from a thread switched
 * into it (native readFileInNetns): /proc/net follows the reading thread's
 * namespace. No process is spawned: the hold reads it on its way to release.
 */
export async function readKernelQueueStats(netns?: string): Promise<KernelQueueStats[]> {
  let text: string;
  try {
    text = netns === undefined ? readText(NFNETLINK_QUEUE_PROC) : native().readFileInNetns(netnsPath(netns), '/proc/thread-self/net/netfilter/nfnetlink_queue');
  } catch (e) {
    // The file appears when nfnetlink_queue is loaded; without it nothing is bound anywhere.
    const code = (e as NodeJS.ErrnoException).code;
    const errno = (e as { errno?: number }).errno;
    if ((code === 'ENOENT' && netns === undefined) || (netns !== undefined && errno === 2 && /^open:/.test((e as Error).message))) return [];
    throw new NfqueueStatsError(`reading ${NFNETLINK_QUEUE_PROC}${netns ? ` in netns ${netns}` : ''}: ${(e as Error).message}`, { cause: e });
  }
  return parseNfqueueProc(text);
}

/**
 * Read at once, not through the thread pool: a hold's release reads its drop counters here, and
 * readFile's four steps (open, fstat, read, close) each wait for a pool thread, which runs at
 * normal priority while protect's loop holds at real-time: on a host busy with the reload, that
 * put 5-70 ms (p50-p99, 150 reloads under the seed's load) between the verdict and the release's
 * end. The file is a few lines; reading it takes microseconds.
 */
function readText(path: string): string {
  return readFileSync(path, 'utf8');
}
