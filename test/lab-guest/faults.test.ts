/**
 * The fault matrix for the plug backend, inside the kernel lab (User-Mode Linux
 * has sch_plug), each cell in a fresh namespace: which process of a hold dies or
 * stops (protect, its watchdog, the daemon, pairs of them), with which signal, at
 * which phase (during CMD; held, before the record; during the release). Each
 * cell holds a real client's SYN in the plug and asserts, from the client's own
 * connect time and the plug's qlen as `tc -s -j qdisc show` reports it, the
 * promise (test/faults/nfqueue.test.ts is the same matrix on the host kernel):
 *   - a process of the hold alive: the hold ends within 50 ms of its owner's
 *     death; in the lab, 50 ms + 3x the lab's own release overhead, measured in
 *     the same namespace just before (docs/TESTING.md);
 *   - whatever is stopped: the hold ends at max-hold, not before, and no later
 *     than max-hold + 1 s (+ 3x that overhead);
 *   - protect and its watchdog both killed: nothing in the kernel releases a
 *     plug (unlike an NFQUEUE, which the kernel unbinds when its socket closes):
 *     the plug stays plugged, and the next `synhold release`, or the next
 *     protect (which recovers under the hold lock), releases it.
 * Raw figures are always reported (t.diagnostic). With SYNHOLD_FAULT_REPORT=FILE,
 * every cell appends a JSON line to FILE (a path the lab shares with the host,
 * e.g. under the checkout: the lab's /tmp is its own).
 *
 * The lab's one CPU takes about a second to start a node process, so the clients
 * are started before the hold and connect when told (armed clients), and the
 * command protect runs waits on a gate the test opens.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { withNetns, type TestNetns } from '../helpers/netns.js';
import { synhold } from '../helpers/cli.js';
import { startEchoServer, type Peer } from '../helpers/tcp.js';
import { childrenOf, commOf, kill, reap, stateOf } from '../helpers/faults.js';
import {
  armedClients,
  gate,
  holding,
  killBound,
  plugQlen,
  PORT,
  releaseOverheadMs,
  startEpochMs,
  status,
  synholdLive,
  until,
  type ArmedClient,
  type ArmedResult,
  type Calibration,
  type LiveCli,
} from '../helpers/lab-faults.js';
import { StateStore } from '../../src/protect/state.js';
import type { ReleaseKind } from '../../src/protect/hold/cause.js';

/**
 * Long enough for the lab to get a client's SYN into the plug (and, for the
 * release phase, CMD's exit seen by protect) well before it: a cell whose hold
 * ended at max-hold before the fault would prove nothing, and says so.
 */
const MAX_HOLD_MS = 5000;
/** The promise's two bounds, as on the host; the lab adds 3x its release overhead to each. */
const AFTER_DEATH_MS = 50;
const PAST_MAX_HOLD_MS = 1000;
/** /proc's start time has 10 ms resolution: a hold may look this much shorter than max-hold. */
const CLOCK_SLACK_MS = 50;
/** An unheld connect (the probe after each cell) completes within this. */
const UNHELD_CONNECT_MS = 2000;

type Target = 'protect' | 'watchdog' | 'daemon';

interface Cell {
  name: string;
  /** Which processes get the signal. */
  targets: Target[];
  signal: 'SIGKILL' | 'SIGSTOP';
  phase: 'during CMD' | 'held, before the record' | 'during release';
  viaDaemon?: boolean;
  /** 'death': within 50 ms (+ the lab's overhead) of the signal. 'max-hold': at max-hold, by max-hold + 1 s (+ overhead). */
  bound: 'death' | 'max-hold';
  /** The kinds the last hold's record may name afterwards (status: stats.lastHold.cause). */
  causes: ReleaseKind[];
  /** When protect survives the fault: what its --json report says about the release. */
  protectReports?: { cause: ReleaseKind; by: 'owner' | 'watchdog' };
}

const CELLS: Cell[] = [
  { name: 'protect killed during CMD', targets: ['protect'], signal: 'SIGKILL', phase: 'during CMD', bound: 'death', causes: ['owner-gone'] },
  { name: 'protect stopped during CMD', targets: ['protect'], signal: 'SIGSTOP', phase: 'during CMD', bound: 'max-hold', causes: ['max-hold'] },
  {
    name: 'watchdog killed during CMD',
    targets: ['watchdog'],
    signal: 'SIGKILL',
    phase: 'during CMD',
    bound: 'death',
    causes: ['watchdog-gone'],
    protectReports: { cause: 'watchdog-gone', by: 'owner' },
  },
  {
    name: 'watchdog stopped during CMD',
    targets: ['watchdog'],
    signal: 'SIGSTOP',
    phase: 'during CMD',
    bound: 'max-hold',
    causes: ['max-hold'],
    protectReports: { cause: 'max-hold', by: 'owner' },
  },
  {
    name: 'protect killed, held before the record',
    targets: ['protect'],
    signal: 'SIGKILL',
    phase: 'held, before the record',
    bound: 'death',
    causes: ['owner-gone'],
  },
  {
    name: 'protect stopped, held before the record',
    targets: ['protect'],
    signal: 'SIGSTOP',
    phase: 'held, before the record',
    bound: 'max-hold',
    causes: ['max-hold'],
  },
  { name: 'protect killed during release', targets: ['protect'], signal: 'SIGKILL', phase: 'during release', bound: 'death', causes: ['owner-gone'] },
  { name: 'protect stopped during release', targets: ['protect'], signal: 'SIGSTOP', phase: 'during release', bound: 'max-hold', causes: ['max-hold'] },
  {
    name: 'daemon killed during CMD',
    targets: ['daemon'],
    signal: 'SIGKILL',
    phase: 'during CMD',
    viaDaemon: true,
    bound: 'death',
    causes: ['owner-gone'],
    protectReports: { cause: 'owner-gone', by: 'watchdog' },
  },
  {
    name: 'daemon stopped during CMD',
    targets: ['daemon'],
    signal: 'SIGSTOP',
    phase: 'during CMD',
    viaDaemon: true,
    bound: 'max-hold',
    // The watchdog's deadline, or (should it be late) protect's backup, which ends the hold through it with SIGTERM.
    causes: ['max-hold', 'manual'],
    protectReports: { cause: 'max-hold', by: 'watchdog' },
  },
  {
    name: 'protect killed, holding through the daemon',
    targets: ['protect'],
    signal: 'SIGKILL',
    phase: 'during CMD',
    viaDaemon: true,
    bound: 'death',
    causes: ['owner-gone'],
  },
  {
    name: 'protect stopped, holding through the daemon',
    targets: ['protect'],
    signal: 'SIGSTOP',
    phase: 'during CMD',
    viaDaemon: true,
    bound: 'max-hold',
    causes: ['max-hold'],
  },
  {
    name: 'daemon and its watchdog stopped',
    targets: ['daemon', 'watchdog'],
    signal: 'SIGSTOP',
    phase: 'during CMD',
    viaDaemon: true,
    bound: 'max-hold',
    // protect's backup past the deadline ends the hold through the watchdog (SIGTERM, SIGCONT): the watchdog logs a signal.
    causes: ['manual', 'max-hold'],
    protectReports: { cause: 'max-hold', by: 'watchdog' },
  },
];

function report(line: Record<string, unknown>): void {
  if (process.env.SYNHOLD_FAULT_REPORT) appendFileSync(process.env.SYNHOLD_FAULT_REPORT, `${JSON.stringify({ backend: 'plug', kernel: 'lab', ...line })}\n`);
}

/** What a cell has running: killed by pid at its end, whatever happened. */
interface Bench {
  ns: TestNetns;
  server: Peer;
  /** Three for the calibration, one to hold, one to probe afterwards. */
  calib: ArmedClient[];
  held: ArmedClient;
  probe: ArmedClient;
  cal: Calibration;
  pids: number[];
  gates: ReturnType<typeof gate>[];
  daemon?: LiveCli;
}

/** A namespace with an echo server on :16000, synhold set up there (plug), the armed clients, and the lab's release overhead measured. */
async function withBench(fn: (b: Bench) => Promise<void>): Promise<void> {
  await withNetns(async (ns) => {
    const [server, clients] = await Promise.all([startEchoServer(ns.name, '127.0.0.1', PORT, 600_000), armedClients(ns.name, 5)]);
    const b: Bench = {
      ns,
      server,
      calib: clients.slice(0, 3),
      held: clients[3]!,
      probe: clients[4]!,
      cal: { max: 0, raw: [] },
      pids: [],
      gates: [],
    };
    try {
      const s = synhold(['--netns', ns.name, 'setup', '--port', String(PORT), '--backend', 'plug']);
      assert.equal(s.status, 0, s.stderr);
      b.cal = await releaseOverheadMs(ns, b.calib);
      await fn(b);
    } finally {
      reap(b.pids);
      for (const pid of b.pids) await until(`pid ${pid} to be gone`, () => ['', 'Z'].includes(stateOf(pid)), 10_000).catch(() => undefined);
      for (const g of b.gates) await g.close();
      synhold(['--netns', ns.name, 'teardown']);
      for (const c of clients) c.kill();
      server.kill();
    }
  });
}

/** The unheld probe: a new connection after the cell completes at once (the plug is not left plugged), and tc shows nothing held. */
async function probeReleased(b: Bench): Promise<ArmedResult> {
  b.probe.go();
  const p = await b.probe.result;
  assert.equal(p.error, null, `a new connection after the fault: ${JSON.stringify(p)}`);
  assert.ok(p.connectMs! < UNHELD_CONNECT_MS, `a new connection after the fault took ${p.connectMs} ms: the plug was left plugged`);
  assert.equal(plugQlen(b.ns), 0, 'tc: the plug holds nothing');
  return p;
}

/** `synhold daemon` for the namespace; b.daemon is its process (its stderr says what it did). */
async function startDaemon(b: Bench): Promise<number> {
  const d = synholdLive(['--netns', b.ns.name, 'daemon']);
  b.pids.push(d.pid);
  b.daemon = d;
  await until('the daemon socket', () => existsSync(StateStore.for(b.ns.name).daemonSocketPath));
  return d.pid;
}

/** A daemon no fault was aimed at serves on: it is still running (and did not crash). */
function assertDaemonLives(b: Bench): void {
  const d = b.daemon!;
  assert.ok(!d.exited() && !['', 'Z'].includes(stateOf(d.pid)), `the daemon exited; its stderr:\n${d.stderr()}`);
}

interface LabHold {
  protect: LiveCli;
  gate: ReturnType<typeof gate>;
  ownerPid: number;
  watchdogPid: number;
  /** Epoch ms at which the watchdog started (its max-hold clock starts just after). */
  watchdogStartedAt: number;
}

/**
 * Starts `synhold --json protect --max-hold MAX_HOLD_MS -- <gate>` (through the daemon when
 * daemonPid is given), waits until the hold is on and the held client's SYN is in the plug (tc),
 * and, for a failpoint, until the owner stopped itself there.
 */
async function holdWithClient(b: Bench, o: { failpoint?: 'held' | 'releasing'; daemonPid?: number }): Promise<LabHold> {
  const g = gate();
  b.gates.push(g);
  const env: Record<string, string> = o.failpoint ? { SYNHOLD_FAILPOINT: o.failpoint } : {};
  const p = synholdLive(['--netns', b.ns.name, '--json', 'protect', '--max-hold', `${MAX_HOLD_MS}ms`, '--', ...g.cmd], env);
  b.pids.push(p.pid);
  const owner = o.daemonPid ?? p.pid;
  const watchdogPid = await until('the watchdog', () => childrenOf(owner).find((c) => commOf(c) === 'synhold-watchdo'));
  b.pids.push(watchdogPid);
  const watchdogStartedAt = startEpochMs(watchdogPid);
  assert.ok(watchdogStartedAt, 'the watchdog start time, from /proc');
  const stopped = () => until(`the owner to stop at failpoint ${o.failpoint}`, () => stateOf(owner) === 'T');
  // The kernel hold is on once the record is written - or once the failpoint stopped the owner just before.
  if (o.failpoint === 'held') await stopped();
  else await until('the hold record', () => holding(b.ns));
  b.held.go();
  await until('the SYN in the plug (tc)', () => plugQlen(b.ns) >= 1);
  // 'releasing' comes once CMD exits (the gate) and protect begins its release, with the SYN still held.
  if (o.failpoint === 'releasing') {
    await g.open();
    await stopped();
  }
  b.pids.push(...childrenOf(p.pid));
  return { protect: p, gate: g, ownerPid: owner, watchdogPid, watchdogStartedAt };
}

/** protect's --json report, once it printed it (it does so when CMD has exited), and whether the process then exited. */
async function protectReport(h: LabHold): Promise<{ json: { releaseCause?: string; releasedBy?: string; exitCode: number }; exitedWithinMs?: number }> {
  await h.gate.open();
  const text = await until(
    "protect's --json report",
    () => {
      const s = h.protect.stdout().trim();
      return s.endsWith('}') ? s : undefined;
    },
    30_000,
  );
  const printedAt = Date.now();
  const json = JSON.parse(text) as { releaseCause?: string; releasedBy?: string; exitCode: number };
  const exited = await until('protect to exit', () => h.protect.exited(), 10_000).then(
    () => true,
    () => false,
  );
  return exited ? { json, exitedWithinMs: Date.now() - printedAt } : { json };
}

async function runCell(t: TestContext, cell: Cell): Promise<void> {
  await withBench(async (b) => {
    const daemonPid = cell.viaDaemon ? await startDaemon(b) : undefined;
    const failpoint = cell.phase === 'held, before the record' ? 'held' : cell.phase === 'during release' ? 'releasing' : undefined;
    const h = await holdWithClient(b, { ...(failpoint ? { failpoint } : {}), ...(daemonPid ? { daemonPid } : {}) });
    const byName: Record<Target, number> = { protect: h.protect.pid, watchdog: h.watchdogPid, daemon: daemonPid ?? 0 };
    const signalledAt = Date.now();
    // Several to kill: stop them all first, so that none reacts to another's death before its own.
    if (cell.signal === 'SIGKILL' && cell.targets.length > 1) for (const target of cell.targets) kill(byName[target], 'SIGSTOP');
    for (const target of cell.targets) kill(byName[target], cell.signal);
    const res = await b.held.result;
    assert.equal(res.error, null, `the held client connected (no RST, no refusal): ${JSON.stringify(res)}`);
    const afterSignal = res.connectedAt! - signalledAt;
    const holdLength = res.connectedAt! - h.watchdogStartedAt;
    const bound = cell.bound === 'death' ? AFTER_DEATH_MS + 3 * b.cal.max : MAX_HOLD_MS + PAST_MAX_HOLD_MS + 3 * b.cal.max;
    const probe = await probeReleased(b);
    let reported: Awaited<ReturnType<typeof protectReport>> | undefined;
    if (cell.protectReports) reported = await protectReport(h);
    const st = await until('the hold to be recorded', () => {
      const s = status(b.ns);
      return s.stats.holds >= 1 && s;
    });
    const cause = st.stats.lastHold?.cause;
    t.diagnostic(
      `connected ${afterSignal} ms after the signal, ${holdLength} ms after the watchdog started (max-hold ${MAX_HOLD_MS} ms); ` +
        `bound ${cell.bound === 'death' ? `${bound} ms after the signal` : `${MAX_HOLD_MS - CLOCK_SLACK_MS}..${bound} ms of hold`}; ` +
        `lab release overhead ${b.cal.raw.join(', ')} ms; probe ${probe.connectMs!.toFixed(1)} ms; ` +
        `recorded: ${st.stats.lastHold?.reason} (${cause})` +
        (reported
          ? `; protect said ${reported.json.releaseCause} by ${reported.json.releasedBy}, ` +
            (reported.exitedWithinMs !== undefined ? `exited ${reported.exitedWithinMs} ms after printing it` : 'and had NOT exited 10 s after printing it')
          : ''),
    );
    report({
      ...cell,
      afterSignalMs: afterSignal,
      holdMs: holdLength,
      maxHoldMs: MAX_HOLD_MS,
      boundMs: bound,
      overheadMs: b.cal.raw,
      cause,
      ...(reported ? { protectExited: reported.exitedWithinMs !== undefined } : {}),
    });
    // The fault hit a hold that was on: the client was still held when the signal went.
    assert.ok(afterSignal >= 0, `connected ${-afterSignal} ms before the signal: the hold ended before the fault (max-hold too short for this lab?)`);
    if (cell.bound === 'death') assert.ok(afterSignal <= bound, `released ${afterSignal} ms after the signal (bound 50 ms + 3 x ${b.cal.max} ms)`);
    else {
      assert.ok(holdLength >= MAX_HOLD_MS - CLOCK_SLACK_MS, `held ${holdLength} ms: released before max-hold (${MAX_HOLD_MS} ms) though nothing should have`);
      assert.ok(holdLength <= bound, `held ${holdLength} ms (bound: max-hold ${MAX_HOLD_MS} + ${PAST_MAX_HOLD_MS} + 3 x ${b.cal.max} ms)`);
    }
    assert.ok(cause && cell.causes.includes(cause), `the hold was recorded as ${st.stats.lastHold?.reason} (${cause}), not one of ${cell.causes.join(', ')}`);
    if (cell.viaDaemon && !cell.targets.includes('daemon')) assertDaemonLives(b);
    if (cell.protectReports) {
      assert.equal(reported!.json.releaseCause, cell.protectReports.cause, "protect's releaseCause");
      assert.equal(reported!.json.releasedBy, cell.protectReports.by, "protect's releasedBy");
      assert.equal(reported!.json.exitCode, 0, "protect's exit status is CMD's");
    }
  });
}

for (const cell of CELLS) {
  test(`fault: ${cell.name} (${cell.signal}, ${cell.phase}${cell.viaDaemon ? ', daemon' : ''}): released within the bound`, { timeout: 5 * 60_000 }, (t) =>
    runCell(t, cell),
  );
}

/** protect and its watchdog killed together: the plug stays plugged; returns the hold and when both were gone. */
async function killBoth(b: Bench): Promise<{ h: LabHold; goneAt: number; connected: () => boolean }> {
  const h = await holdWithClient(b, {});
  let connected = false;
  void b.held.result.then((r) => (connected = r.connectedAt !== null));
  for (const pid of [h.protect.pid, h.watchdogPid]) kill(pid, 'SIGSTOP');
  for (const pid of [h.protect.pid, h.watchdogPid]) kill(pid, 'SIGKILL');
  await until('protect and its watchdog to be gone', () => [h.protect.pid, h.watchdogPid].every((p) => ['', 'Z'].includes(stateOf(p))));
  return { h, goneAt: Date.now(), connected: () => connected };
}

/** No kernel mechanism ends a plug whose owner and watchdog are gone: it still holds the SYN a while later. */
async function assertStillPlugged(b: Bench, k: { goneAt: number; connected: () => boolean }): Promise<number> {
  await sleep(1000);
  const qlen = plugQlen(b.ns);
  assert.equal(k.connected(), false, 'the held client connected with no synhold process left: something released the plug');
  assert.ok(qlen >= 1, `tc: the plug holds ${qlen} packets ${Date.now() - k.goneAt} ms after both died`);
  return Date.now() - k.goneAt;
}

test(
  'fault: protect and its watchdog both killed (plug: the kernel keeps the plug plugged): `synhold release` releases it',
  { timeout: 5 * 60_000 },
  async (t) => {
    await withBench(async (b) => {
      const k = await killBoth(b);
      const stillMs = await assertStillPlugged(b, k);
      const releaseAt = Date.now();
      const r = synhold(['--netns', b.ns.name, 'release']);
      const releaseEnd = Date.now();
      assert.equal(r.status, 0, r.stderr);
      const res = await b.held.result;
      assert.equal(res.error, null, JSON.stringify(res));
      const bound = killBound(b.cal);
      t.diagnostic(
        `still plugged ${stillMs} ms after both died; \`synhold release\` took ${releaseEnd - releaseAt} ms: ${r.stdout.trim()}; ` +
          `client connected ${res.connectedAt! - releaseAt} ms after it started (${res.connectedAt! - releaseEnd} ms after it ended); ` +
          `lab release overhead ${b.cal.raw.join(', ')} ms`,
      );
      report({
        name: 'protect and watchdog killed, then synhold release',
        targets: ['protect', 'watchdog'],
        signal: 'SIGKILL',
        phase: 'during CMD',
        bound: 'recovery',
        stillPluggedMs: stillMs,
        releaseMs: res.connectedAt! - releaseAt,
        releaseCommandMs: releaseEnd - releaseAt,
        overheadMs: b.cal.raw,
      });
      assert.match(r.stdout, /the hold record was stale \(its owner and watchdog were gone\); released directly/);
      assert.ok(res.connectedAt! >= releaseAt, 'connected only once synhold release ran');
      assert.ok(res.connectedAt! - releaseEnd <= bound, `connected ${res.connectedAt! - releaseEnd} ms after synhold release ended (bound ${bound} ms)`);
      await probeReleased(b);
      const st = status(b.ns);
      assert.equal(st.held, false);
      assert.equal(st.stats.lastHold?.cause, 'recovered');
      assert.equal(st.stats.lastHold?.reason, 'recovered: owner and watchdog were gone');
    });
  },
);

test(
  'fault: protect and its watchdog both killed (plug): the next protect recovers the hold under the lock and releases it',
  { timeout: 5 * 60_000 },
  async (t) => {
    await withBench(async (b) => {
      const k = await killBoth(b);
      const stillMs = await assertStillPlugged(b, k);
      const startAt = Date.now();
      const p = synholdLive(['--netns', b.ns.name, '--json', 'protect', '--max-hold', '30s', '--', 'true']);
      b.pids.push(p.pid);
      const out = await p.done;
      const endAt = Date.now();
      assert.equal(out.status, 0, out.stderr);
      const res = await b.held.result;
      assert.equal(res.error, null, JSON.stringify(res));
      const bound = killBound(b.cal);
      t.diagnostic(
        `still plugged ${stillMs} ms after both died; the next protect ran ${endAt - startAt} ms; the held client connected ${res.connectedAt! - startAt} ms after it started; ${out.stderr.trim()}`,
      );
      report({
        name: 'protect and watchdog killed, then a new protect',
        targets: ['protect', 'watchdog'],
        signal: 'SIGKILL',
        phase: 'during CMD',
        bound: 'recovery',
        stillPluggedMs: stillMs,
        releaseMs: res.connectedAt! - startAt,
        releaseCommandMs: endAt - startAt,
        overheadMs: b.cal.raw,
      });
      assert.ok(res.connectedAt! >= startAt, 'connected only once the new protect ran');
      assert.ok(res.connectedAt! - endAt <= bound, `connected ${res.connectedAt! - endAt} ms after the new protect ended (bound ${bound} ms)`);
      await probeReleased(b);
      const st = status(b.ns);
      // Two holds recorded: the dead one, recovered (a safety-net release), and the new protect's own.
      assert.equal(st.stats.holds, 2, JSON.stringify(st.stats));
      assert.equal(st.stats.watchdogReleases, 1, JSON.stringify(st.stats));
      assert.equal(st.held, false);
    });
  },
);

test('fault: protect and its watchdog both stopped (no other synhold process): `synhold release` ends the hold at once', { timeout: 5 * 60_000 }, async (t) => {
  await withBench(async (b) => {
    const h = await holdWithClient(b, {});
    kill(h.protect.pid, 'SIGSTOP');
    kill(h.watchdogPid, 'SIGSTOP');
    const releaseAt = Date.now();
    const r = synhold(['--netns', b.ns.name, 'release']);
    const releaseEnd = Date.now();
    assert.equal(r.status, 0, r.stderr);
    const res = await b.held.result;
    assert.equal(res.error, null, JSON.stringify(res));
    const bound = killBound(b.cal);
    t.diagnostic(
      `${r.stdout.trim()}; \`synhold release\` took ${releaseEnd - releaseAt} ms; the client connected ${res.connectedAt! - releaseAt} ms after it started; ` +
        `lab release overhead ${b.cal.raw.join(', ')} ms`,
    );
    report({
      name: 'protect and watchdog stopped, then synhold release',
      targets: ['protect', 'watchdog'],
      signal: 'SIGSTOP',
      phase: 'during CMD',
      bound: 'release',
      releaseMs: res.connectedAt! - releaseAt,
      releaseCommandMs: releaseEnd - releaseAt,
      overheadMs: b.cal.raw,
    });
    assert.match(r.stdout, new RegExp(`released by the hold's watchdog \\(pid ${h.watchdogPid}, holding for protect pid ${h.protect.pid}\\)`));
    assert.ok(res.connectedAt! >= releaseAt, 'connected only once synhold release ran');
    assert.ok(res.connectedAt! - releaseEnd <= bound, `connected ${res.connectedAt! - releaseEnd} ms after synhold release ended (bound ${bound} ms)`);
    await probeReleased(b);
    const st = status(b.ns);
    assert.equal(st.stats.lastHold?.cause, 'manual');
    assert.equal(st.stats.lastHold?.reason, 'released by the watchdog (signal)');
  });
});

test('fault: a manual plug whose watchdog is stopped, with a daemon running: the daemon ends it past max-hold', { timeout: 5 * 60_000 }, async (t) => {
  await withBench(async (b) => {
    await startDaemon(b);
    const p = synhold(['--netns', b.ns.name, '--json', 'plug', '--max-hold', `${MAX_HOLD_MS}ms`]);
    assert.equal(p.status, 0, p.stderr);
    const j = JSON.parse(p.stdout) as { held: boolean; watchdogPid: number; backend: string; since: number; deadline: number };
    assert.equal(j.held, true);
    assert.equal(j.backend, 'plug');
    b.pids.push(j.watchdogPid);
    const startedAt = startEpochMs(j.watchdogPid)!;
    kill(j.watchdogPid, 'SIGSTOP');
    const stoppedAt = Date.now();
    b.held.go();
    await until('the SYN in the plug (tc)', () => plugQlen(b.ns) >= 1);
    const res = await b.held.result;
    assert.equal(res.error, null, JSON.stringify(res));
    const held = res.connectedAt! - startedAt;
    const bound = MAX_HOLD_MS + PAST_MAX_HOLD_MS + 3 * b.cal.max;
    const st = status(b.ns);
    t.diagnostic(
      `held ${held} ms from the watchdog's start (max-hold ${MAX_HOLD_MS} ms; stopped ${stoppedAt - startedAt} ms in; bound ${bound} ms); ` +
        `recorded: ${st.stats.lastHold?.reason}; lab release overhead ${b.cal.raw.join(', ')} ms`,
    );
    report({
      name: 'manual plug, watchdog stopped, daemon running',
      targets: ['watchdog'],
      signal: 'SIGSTOP',
      phase: 'during CMD',
      bound: 'max-hold',
      holdMs: held,
      maxHoldMs: MAX_HOLD_MS,
      boundMs: bound,
      overheadMs: b.cal.raw,
    });
    assert.ok(held >= MAX_HOLD_MS - CLOCK_SLACK_MS, `held ${held} ms: released before max-hold`);
    assert.ok(held <= bound, `held ${held} ms (bound ${bound} ms)`);
    await probeReleased(b);
    // The daemon's reaper asks the watchdog (SIGTERM, SIGCONT): it logs a signal.
    assert.ok(['manual', 'max-hold'].includes(st.stats.lastHold?.cause ?? ''), JSON.stringify(st.stats.lastHold));
    assertDaemonLives(b);
  });
});

test(
  'fault: a manual plug whose watchdog is killed (plug: nothing releases it by itself): `synhold release` releases it',
  { timeout: 5 * 60_000 },
  async (t) => {
    await withBench(async (b) => {
      const p = synhold(['--netns', b.ns.name, '--json', 'plug', '--max-hold', '60s']);
      assert.equal(p.status, 0, p.stderr);
      const watchdogPid = (JSON.parse(p.stdout) as { watchdogPid: number }).watchdogPid;
      b.pids.push(watchdogPid);
      b.held.go();
      await until('the SYN in the plug (tc)', () => plugQlen(b.ns) >= 1);
      let connected = false;
      void b.held.result.then((r) => (connected = r.connectedAt !== null));
      kill(watchdogPid, 'SIGKILL');
      await until('the watchdog to be gone', () => ['', 'Z'].includes(stateOf(watchdogPid)));
      const stillMs = await assertStillPlugged(b, { goneAt: Date.now(), connected: () => connected });
      // status: the record is there, its processes are gone (the lock is free), and the kernel still holds the SYN.
      const before = status(b.ns);
      assert.match(before.problem ?? '', /a hold record left by processes that are gone \(plug pid \d+\); run `synhold release`/);
      assert.ok((before.counters?.heldPackets ?? 0) >= 1, `status: the kernel holds the SYN: ${JSON.stringify(before.counters)}`);
      const releaseAt = Date.now();
      const r = synhold(['--netns', b.ns.name, 'release']);
      const releaseEnd = Date.now();
      assert.equal(r.status, 0, r.stderr);
      const res = await b.held.result;
      assert.equal(res.error, null, JSON.stringify(res));
      const bound = killBound(b.cal);
      t.diagnostic(
        `still plugged ${stillMs} ms on (status then: held ${before.held}, ${before.counters?.heldPackets} packets held, problem: ${before.problem}); ` +
          `${r.stdout.trim()}; connected ${res.connectedAt! - releaseEnd} ms after synhold release ended`,
      );
      report({
        name: 'manual plug, watchdog killed, then synhold release',
        targets: ['watchdog'],
        signal: 'SIGKILL',
        phase: 'during CMD',
        bound: 'recovery',
        stillPluggedMs: stillMs,
        releaseMs: res.connectedAt! - releaseAt,
        releaseCommandMs: releaseEnd - releaseAt,
        overheadMs: b.cal.raw,
      });
      assert.match(r.stdout, /the hold record was stale/);
      assert.ok(res.connectedAt! >= releaseAt, 'connected only once synhold release ran');
      assert.ok(res.connectedAt! - releaseEnd <= bound, `connected ${res.connectedAt! - releaseEnd} ms after synhold release ended (bound ${bound} ms)`);
      await probeReleased(b);
      assert.equal(status(b.ns).stats.lastHold?.cause, 'recovered');
    });
  },
);

/*
 * Whatever ended the hold (max-hold here, with or without a process of the hold stopped),
 * protect still owes its caller an exit with CMD's status once CMD has exited: a deploy
 * script waits on it.
 */
const EXIT_CASES = [
  { stopped: 'watchdog', title: 'though its watchdog is stopped' },
  { stopped: 'daemon', title: 'though the daemon it holds through is stopped' },
  { stopped: undefined, title: 'holding through a running daemon' },
] as const;
for (const c of EXIT_CASES) {
  test(`fault: protect exits once CMD has exited, ${c.title} (the hold ended at max-hold)`, { timeout: 5 * 60_000 }, async (t) => {
    await withBench(async (b) => {
      const daemonPid = c.stopped !== 'watchdog' ? await startDaemon(b) : undefined;
      const h = await holdWithClient(b, daemonPid ? { daemonPid } : {});
      const stoppedPid = c.stopped === 'daemon' ? daemonPid! : c.stopped === 'watchdog' ? h.watchdogPid : undefined;
      if (stoppedPid) kill(stoppedPid, 'SIGSTOP');
      const res = await b.held.result;
      assert.equal(res.error, null, JSON.stringify(res));
      const r = await protectReport(h);
      t.diagnostic(
        `held ${res.connectedAt! - h.watchdogStartedAt} ms; protect said ${r.json.releaseCause} by ${r.json.releasedBy}; ` +
          (b.daemon ? `daemon ${b.daemon.exited() ? `EXITED (stderr: ${b.daemon.stderr().trim()})` : `running (state ${stateOf(b.daemon.pid)})`}; ` : '') +
          (r.exitedWithinMs !== undefined
            ? `exited ${r.exitedWithinMs} ms after its report`
            : `still running 10 s after its report${stoppedPid ? ` (${c.stopped} state ${stateOf(stoppedPid)})` : ` (daemon state ${stateOf(daemonPid!)})`}`),
      );
      assert.equal(r.json.releaseCause, 'max-hold');
      assert.equal(r.json.exitCode, 0);
      if (!c.stopped) assertDaemonLives(b);
      assert.ok(r.exitedWithinMs !== undefined, `protect printed its report (CMD exited 0) but had not exited 10 s later`);
    });
  });
}
