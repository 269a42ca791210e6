/**
 * A hold this program owns, scoped with `await using`: new connections to the
 * protected port wait from hold() until the block ends (or max-hold, or this
 * process's death: its watchdog releases then). release() ends a hold from
 * anywhere, as `synhold release` does. What `synhold plug --max-hold 3s` and
 * `synhold release` do, except that the hold belongs to this process.
 *
 *   node dist/examples/library/hold-using.js NETNS
 */
import { hold, normalizeConfig, release, setup, status, teardown } from 'synhold';
import { netnsArg } from './netns.js';

const netns = netnsArg('hold-using.js NETNS');
await setup(normalizeConfig({ ports: [16300], backend: 'nfqueue' }), { netns });
console.log('setup: port 16300, backend nfqueue');
try {
  {
    await using h = await hold({ netns, maxHoldMs: 3000 });
    console.log(`hold: on, backend ${h.held.backend}, ends by ${h.held.deadline - h.held.since} ms at the latest (watchdog pid ${h.held.watchdogPid})`);
    console.log(`status inside the block: held ${(await status({ netns })).held}`);
  } // <- released here, by disposal
  console.log(`status after the block: held ${(await status({ netns })).held}`);

  // Another way to end it: release() from anywhere (this process here, another one in practice).
  const h = await hold({ netns, maxHoldMs: 3000 });
  const r = await release({ netns });
  const ended = await h.done;
  console.log(`release(): ${r.how}; the hold ended after ${ended.durationMs.toFixed(1)} ms: ${ended.cause.kind}, by ${ended.by}`);
  console.log(`status after release(): held ${(await status({ netns })).held}`);
} finally {
  await teardown({ netns });
  console.log('teardown: done');
}
