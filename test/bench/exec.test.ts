// Commands the bench runs for its set-up: output captured, bounded in time,
// failures described the way a skipped strategy's reason needs them.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { exec, execOk, describeFailure, lastLine } from '../../bench/src/exec.js';
import { failureLines } from '../../bench/src/run-strategy.js';

test("exit status, stdout and stderr captured; a failure names the command, the status and stderr's tail", async () => {
  const r = await exec(['sh', '-c', "echo out; echo 'Error: Specified qdisc kind is unknown.' >&2; exit 2"]);
  assert.equal(r.code, 2);
  assert.equal(r.stdout, 'out\n');
  assert.equal(
    describeFailure(r),
    "`sh -c echo out; echo 'Error: Specified qdisc kind is unknown.' >&2; exit 2` exited 2: Error: Specified qdisc kind is unknown.",
  );
  await assert.rejects(execOk(['sh', '-c', 'exit 1']), /exited 1/);
  assert.equal((await execOk(['true'])).code, 0);
});

test('a command that does not exist, and one that outlives its timeout (killed by PID)', async () => {
  const nx = await exec(['/nonexistent/tool']);
  assert.equal(nx.error, 'ENOENT');
  assert.match(describeFailure(nx), /could not run \(ENOENT\)/);
  const t0 = Date.now();
  const slow = await exec(['sleep', '10'], { timeoutMs: 200 });
  assert.ok(Date.now() - t0 < 3000);
  assert.equal(slow.timedOut, true);
  assert.equal(slow.signal, 'SIGKILL');
  assert.match(describeFailure(slow), /timed out/);
});

test('lastLine and failureLines pick what explains a failure', () => {
  assert.equal(lastLine('a\n\nb  \n\n'), 'b');
  assert.equal(lastLine(''), '');
  const out = ['[NOTICE] haproxy started', 'file:///x.js:1', 'TypeError: boom', '    at f (x.js:1:1)', '', 'Node.js v20.20.2'].join('\n');
  const f = failureLines(out);
  assert.ok(f.includes('TypeError: boom'), f);
  assert.ok(f.endsWith('Node.js v20.20.2'), f);
  assert.ok(!f.includes('at f ('), f);
});
