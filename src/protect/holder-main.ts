/** Entry point of the holder process (see holder.ts); forked, never run by hand. */
import { runHolder, type HolderArgs } from './holder.js';

const args = JSON.parse(process.argv[2] ?? '{}') as HolderArgs;
runHolder(args).then(
  (code) => process.exit(code),
  (e: unknown) => {
    if (process.connected) process.send?.({ type: 'error', code: 'ERR_HOLDER', message: (e as Error).message });
    process.exit(1);
  },
);
