#!/usr/bin/env node
// package.json "install": use the prebuilt native addon and watchdog the npm
// package ships for this platform (prebuilds/<platform>-<arch>/, made by
// scripts/prebuild.sh at `npm pack`), after checking that they load and run
// here; otherwise build them from source with node-gyp (needs cc, make and
// python3). A checkout (a .git directory) always builds from source, as does
// SYNHOLD_BUILD_FROM_SOURCE=1. CommonJS and no dependencies: it runs before
// anything else of the package is usable.
'use strict';
const { existsSync } = require('node:fs');
const { join } = require('node:path');
const { spawnSync } = require('node:child_process');

const root = join(__dirname, '..');
const platform = `${process.platform}-${process.arch}`;
const dir = join(root, 'prebuilds', platform);

function prebuiltWorks() {
  const addon = join(dir, 'synhold_native.node');
  const watchdog = join(dir, 'synhold-watchdog');
  if (!existsSync(addon) || !existsSync(watchdog)) return `no prebuilt binaries for ${platform}`;
  try {
    process.dlopen({ exports: {} }, addon);
  } catch (e) {
    return `the prebuilt addon does not load here (${e.message.split('\n')[0]})`;
  }
  // Without arguments the watchdog prints its usage and exits 2: it runs on this machine's libc.
  const r = spawnSync(watchdog, [], { encoding: 'utf8' });
  if (r.status !== 2) return `the prebuilt watchdog does not run here (${r.error ? r.error.message : `exit ${r.status}`})`;
  return undefined;
}

function buildFromSource(why) {
  console.error(`synhold: building the native addon from source (${why})`);
  // npm gives lifecycle scripts its own node-gyp (npm_config_node_gyp); otherwise one on PATH.
  const gyp = process.env.npm_config_node_gyp;
  const r = gyp ? spawnSync(process.execPath, [gyp, 'rebuild'], { cwd: root, stdio: 'inherit' }) : spawnSync('node-gyp', ['rebuild'], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(
      `synhold: the build from source failed (${r.error ? r.error.message : `exit ${r.status}`}): install a C compiler, make and python3 (Debian: apt-get install build-essential python3), then \`npm rebuild synhold\``,
    );
    process.exit(1);
  }
}

if (existsSync(join(root, '.git'))) buildFromSource('a checkout');
else if (process.env.SYNHOLD_BUILD_FROM_SOURCE === '1') buildFromSource('SYNHOLD_BUILD_FROM_SOURCE=1');
else {
  const problem = prebuiltWorks();
  if (problem === undefined) console.error(`synhold: using the prebuilt native addon and watchdog for ${platform}`);
  else buildFromSource(problem);
}
