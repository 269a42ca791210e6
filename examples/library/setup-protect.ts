/**
 * synhold's everyday cycle from a program: setup, protect a reload (bounded by
 * an AbortSignal), status, teardown. What `synhold setup --port 16000
 * --backend nfqueue`, `synhold protect -- CMD`, `synhold status` and `synhold
 * teardown` do, in one process.
 *
 *   node dist/examples/library/setup-protect.js NETNS [-- CMD ARGS...]
 *
 * CMD stands for the reload (default: `sleep 0.2`). An AbortSignal cancels
 * protect after 3 s (the hold lasts up to 5): a reload still running then is
 * ended as `synhold protect` ends it on SIGTERM (the hold released first, CMD
 * sent SIGTERM, exit 143).
 * nfqueue is named explicitly because this machine's kernel has no sch_plug;
 * `backend: 'auto'` would pick plug where there is one.
 */
import { normalizeConfig, protect, setup, status, teardown } from 'synhold';
import { netnsArg } from './netns.js';

const netns = netnsArg('setup-protect.js NETNS [-- CMD ARGS...]');
const dash = process.argv.indexOf('--');
const command = dash > 0 ? process.argv.slice(dash + 1) : ['sleep', '0.2'];
const PORT = 16000;

const s = await setup(normalizeConfig({ ports: [PORT], backend: 'nfqueue' }), { netns });
console.log(`setup: ${s.action}, port ${PORT}, backend ${s.backend} (${s.backendReason})`);
try {
  const p = await protect({ command, netns, maxHoldMs: 5000, lockWaitMs: 1000, signal: AbortSignal.timeout(3000) });
  console.log(
    `protect: ${command.join(' ')} -> exit ${p.exitCode}${p.timedOut ? ' (timed out)' : ''}; held ${p.holdMs?.toFixed(1)} ms, released ${p.released} SYNs (${p.releaseReason})`,
  );
  const st = await status({ netns });
  console.log(
    `status: set up ${st.setUp}, backend ${st.backend}, held ${st.held}, holds so far ${st.stats.holds}, last hold released because: ${st.stats.lastHold?.reason}`,
  );
} finally {
  const t = await teardown({ netns });
  console.log(`teardown: removed ${t.removed} (backend ${t.backend})`);
}
const after = await status({ netns });
console.log(`status after teardown: set up ${after.setUp}`);
