// Real nginx-light and HAProxy 2.6 from Debian: start, reload in each flavour,
// and stop by PID with nothing left behind.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  startNginx,
  startHaproxy,
  freePort,
  waitForHttp,
  parseShowProcWorkers,
  haproxySocketCommand,
  type NginxServer,
  type HaproxyMode,
} from '../../bench/src/servers.js';
import { isRunning, type OwnedProc } from '../../bench/src/procs.js';
import { runLoad } from '../../bench/src/loadgen.js';

const allGone = (procs: OwnedProc[]): boolean => procs.every((p) => !isRunning(p));

describe('nginx', () => {
  test('2 workers answer pong; stop leaves no process and no temp dir', async () => {
    const ng = await startNginx({ workers: 2 });
    let procs: OwnedProc[] = [];
    try {
      // Serving proves one worker is up; the master may still be forking the other.
      for (const deadline = Date.now() + 5000; ; await sleep(20)) {
        procs = ng.processes();
        if (procs.length >= 3 || Date.now() > deadline) break;
      }
      assert.equal(procs.length, 3, `master + 2 workers, got ${procs.map((p) => p.pid)}`);
      const r = await runLoad({ host: '127.0.0.1', port: ng.port, requests: 10, concurrency: 2 });
      assert.equal(r.outcomes.ok, 10);
    } finally {
      await ng.stop();
    }
    assert.ok(allGone(procs));
    assert.ok(!existsSync(ng.dir));
  });
});

describe('haproxy', () => {
  let ng: NginxServer;
  before(async () => {
    ng = await startNginx({ workers: 1 });
  });
  after(async () => {
    await ng?.stop();
  });

  for (const mode of ['sf', 'seamless', 'master-worker'] as HaproxyMode[]) {
    test(`${mode}: serves, reloads 3 times (measured), stops cleanly`, async () => {
      const hp = await startHaproxy({ backendPort: ng.port, port: await freePort(), mode });
      const seen: OwnedProc[] = [];
      try {
        await waitForHttp('127.0.0.1', hp.port);
        const argv = hp.reloadArgv();
        if (mode === 'master-worker') assert.equal(argv, null);
        else {
          assert.ok(argv!.includes('-sf') && argv!.includes('-D') && argv!.includes(hp.cfgPath));
          assert.equal(argv!.includes('-x'), mode === 'seamless');
        }
        for (let i = 0; i < 3; i++) {
          seen.push(...hp.processes());
          const r = await hp.reload();
          assert.ok(r.ok, `reload ${i}: ${r.error ?? ''} ${r.output ?? ''}`);
          assert.equal(r.exitCode, 0);
          assert.ok(r.durationMs > 0 && r.durationMs < 10_000);
          assert.ok(r.newPids.length > 0);
          assert.notDeepEqual(r.newPids, r.oldPids);
          if (mode === 'master-worker') assert.ok(r.readyMs! >= r.durationMs);
          await waitForHttp('127.0.0.1', hp.port, { timeoutMs: 2000 });
        }
        seen.push(...hp.processes());
      } finally {
        await hp.stop();
      }
      assert.ok(allGone(seen), 'every haproxy process ever seen is gone');
      assert.equal(hp.processes().length, 0);
      assert.ok(!existsSync(hp.dir));
    });
  }

  test('master CLI show proc parsing', () => {
    const text =
      '#<PID> <type> <reloads> <uptime> <version>\n1 master 0 [failed: 0] 0d 2.6\n# workers\n12 worker 0 0d 2.6\n# old workers\n9 worker 1 0d 2.6\n# programs\n';
    assert.deepEqual(parseShowProcWorkers(text), [12]);
  });

  test('a broken config: reload reports failure, old process keeps serving', async () => {
    const hp = await startHaproxy({ backendPort: ng.port, port: await freePort(), statsSocket: true });
    try {
      assert.match(await haproxySocketCommand(hp.statsSocket!, 'show info'), /Version: 2\./);
      writeFileSync(hp.cfgPath, 'global\n    this-is-not-a-keyword\n');
      const r = await hp.reload();
      assert.equal(r.ok, false);
      assert.notEqual(r.exitCode, 0);
      assert.match(r.output ?? '', /ALERT|unknown keyword/i);
      const l = await runLoad({ host: '127.0.0.1', port: hp.port, requests: 5, concurrency: 1 });
      assert.equal(l.outcomes.ok, 5);
    } finally {
      await hp.stop();
    }
  });

  test('stop also kills an old process still draining a connection after -sf', async () => {
    const hp = await startHaproxy({ backendPort: ng.port, port: await freePort() });
    let idle: Socket | undefined;
    const seen: OwnedProc[] = [];
    try {
      // An idle client connection keeps the old process alive after -sf (it
      // waits for the request up to `timeout http-request`).
      idle = connect({ host: '127.0.0.1', port: hp.port });
      idle.on('error', () => undefined);
      await new Promise((r) => idle!.once('connect', r));
      await new Promise((r) => setTimeout(r, 50));
      const r = await hp.reload();
      assert.ok(r.ok, r.output);
      await new Promise((r) => setTimeout(r, 100));
      const procs = hp.processes();
      seen.push(...procs);
      assert.ok(procs.length >= 2, `old + new process expected, got ${procs.map((p) => p.pid)}`);
    } finally {
      await hp.stop();
      idle?.destroy();
    }
    assert.ok(allGone(seen));
  });
});
