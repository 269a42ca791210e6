// A developer's runner for the bench's building blocks, until `synhold bench`
// (the CLI, with network namespaces and the hold strategies) exists:
//
//   node dist/src/bench/devrun.js [--modes none,seamless,master-worker]
//        [--duration 10000] [--concurrency 50] [--interval 100] [--out DIR] [--ab]
//
// Runs, on 127.0.0.1 of the current network namespace, a no-reload baseline and
// then each reload flavour that needs no hold backend (none = the seed's plain
// -sf, seamless = -x with expose-fd listeners, master-worker = SIGUSR2), each on
// a fresh nginx + HAProxy pair, and writes the table, JSON, SVG and PNG.
// --ab also runs Apache Bench (the seed's client) against the same baseline
// setup, as a cross-check of the load generator.
//
// Every server is stopped by PID in a finally block; every loop is bounded.

import { execFileSync } from "node:child_process";
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";
import { startNginx, startHaproxy, freePort, CleanupStack, installSignalCleanup, type HaproxyMode } from "./servers.js";
import { runLoad, type LoadResult } from "./loadgen.js";
import { runReloadLoop, type ReloadLoopResult } from "./reloader.js";
import { strategyReport, writeReport, type StrategyReport } from "./report.js";
import { summarizeMs } from "./histogram.js";

const MODE_OF: Record<string, HaproxyMode> = { none: "sf", seamless: "seamless", "master-worker": "master-worker" };

export interface AbResult {
  complete: number;
  failed: number;
  rps: number;
  meanMs: number;
  /** ab's percentiles are whole milliseconds */
  p50: number;
  p99: number;
  max: number;
}

/** Run `ab -n N -c C -r` against a loopback URL and parse its summary. */
export function runAb(port: number, n: number, c: number, timeoutMs = 300_000): AbResult {
  const out = execFileSync("ab", ["-q", "-n", String(n), "-c", String(c), "-r", `http://127.0.0.1:${port}/`], {
    encoding: "utf8",
    timeout: timeoutMs,
  });
  const g = (re: RegExp): number => Number((out.match(re) ?? [])[1] ?? NaN);
  const pct = new Map([...out.matchAll(/^\s+(\d+)%\s+(\d+)/gm)].map((m) => [m[1], Number(m[2])]));
  return {
    complete: g(/Complete requests:\s+(\d+)/),
    failed: g(/Failed requests:\s+(\d+)/),
    rps: g(/Requests per second:\s+([\d.]+)/),
    meanMs: g(/Time per request:\s+([\d.]+) \[ms\] \(mean\)/),
    p50: pct.get("50") ?? NaN,
    p99: pct.get("99") ?? NaN,
    max: pct.get("100") ?? NaN,
  };
}

async function runOne(name: string, mode: HaproxyMode | null, o: { durationMs: number; concurrency: number; intervalMs: number; ab: boolean }): Promise<StrategyReport> {
  const cl = new CleanupStack();
  try {
    const ng = await startNginx({ workers: 1 });
    cl.add(() => ng.stop());
    const hp = await startHaproxy({ backendPort: ng.port, port: await freePort(), mode: mode ?? "sf" });
    cl.add(() => hp.stop());
    const ac = new AbortController();
    const loop: Promise<ReloadLoopResult> | undefined = mode
      ? runReloadLoop({ target: hp, intervalMs: o.intervalMs, signal: ac.signal, deadlineMs: o.durationMs + 30_000 })
      : undefined;
    let load: LoadResult;
    try {
      load = await runLoad({
        host: "127.0.0.1",
        port: hp.port,
        concurrency: o.concurrency,
        durationMs: o.durationMs,
        onProgress: (p) => process.stderr.write(`  ${name}: ${(p.elapsedMs / 1000).toFixed(0)} s, ${p.requests} requests, ${p.failed} failed\n`),
        progressIntervalMs: 5000,
      });
    } finally {
      ac.abort();
    }
    const rl = loop ? await loop : undefined;
    if (o.ab && !mode) {
      const n = Math.max(1000, Math.min(200_000, load.requests));
      const ab = runAb(hp.port, n, o.concurrency);
      const s = summarizeMs(load.latency);
      process.stderr.write(
        `  ab cross-check (same HAProxy->nginx, -n ${n} -c ${o.concurrency}): ab ${ab.rps.toFixed(0)} req/s, mean ${ab.meanMs} ms, p50 ${ab.p50} ms, p99 ${ab.p99} ms, max ${ab.max} ms, failed ${ab.failed}\n` +
          `  synhold loadgen:                                       ${load.throughput.toFixed(0)} req/s, mean ${s.mean} ms, p50 ${s.p50} ms, p99 ${s.p99} ms, max ${s.max} ms, failed ${load.failed}\n`,
      );
    }
    return strategyReport(name, load, rl, mode ? {} : { baseline: true });
  } finally {
    const errs = await cl.run();
    if (errs.length > 0) process.stderr.write(`cleanup errors: ${errs.map((e) => e.message).join("; ")}\n`);
  }
}

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      modes: { type: "string", default: "none,seamless,master-worker" },
      duration: { type: "string", default: "10000" },
      concurrency: { type: "string", default: "50" },
      interval: { type: "string", default: "100" },
      out: { type: "string", default: "bench-out" },
      ab: { type: "boolean", default: false },
    },
  });
  const o = {
    durationMs: Number(values.duration),
    concurrency: Number(values.concurrency),
    intervalMs: Number(values.interval),
    ab: values.ab ?? false,
  };
  const modes = (values.modes ?? "").split(",").filter((m) => m.length > 0);
  for (const m of modes) if (!(m in MODE_OF)) throw new Error(`unknown mode ${m} (have: ${Object.keys(MODE_OF).join(", ")})`);
  const reports: StrategyReport[] = [await runOne("baseline", null, o)];
  for (const m of modes) reports.push(await runOne(m, MODE_OF[m]!, o));
  const w = writeReport(values.out!, reports, { jsonExtra: { durationMs: o.durationMs, concurrency: o.concurrency, intervalMs: o.intervalMs } });
  process.stdout.write(w.table);
  process.stdout.write(`\nwritten: ${Object.values(w.files).join(" ")}\n`);
  for (const warn of w.warnings) process.stderr.write(`warning: ${warn}\n`);
  return 0;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  installSignalCleanup();
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
      process.exit(1);
    },
  );
}
