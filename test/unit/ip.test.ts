/** src/model/ip.ts against node:net's isIPv4/isIPv6 (the oracle), on hand-picked and generated strings. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { isIPv4, isIPv6 } from '../../src/model/ip.js';

const CASES = [
  '',
  '0.0.0.0',
  '127.0.0.1',
  '255.255.255.255',
  '256.0.0.1',
  '1.2.3',
  '1.2.3.4.5',
  '01.2.3.4',
  '1.2.3.04',
  '1.2.3.4 ',
  ' 1.2.3.4',
  '169.254.255.254',
  '1..2.3',
  '1.2.3.-4',
  'a.b.c.d',
  '::',
  '::1',
  '1::',
  '1:2:3:4:5:6:7:8',
  '1:2:3:4:5:6:7:8:9',
  '1:2:3:4:5:6:7::',
  '::2:3:4:5:6:7:8',
  '1::8',
  ':::',
  '1:::2',
  '1::2::3',
  ':1',
  '1:',
  'fe80::1%eth0',
  'fe80::1%',
  '%eth0',
  'fe80::1%1',
  '::ffff:1.2.3.4',
  '::ffff:1.2.3.256',
  '1:2:3:4:5:6:1.2.3.4',
  '1:2:3:4:5:6:7:1.2.3.4',
  '::1.2.3.4',
  '1.2.3.4::',
  'g::1',
  '12345::1',
  'ABCD:EF01::1',
  '::ffff:0:1.2.3.4',
  '1:2:3:4:5::1.2.3.4',
  '1:2:3:4:5:6::1.2.3.4',
  'localhost',
  '1.2.3.4/32',
  '[::1]',
  '::1/128',
  '0:0:0:0:0:0:0:0',
  '1:2:3:4:5:6:7:8%zone',
  '1.2.3.4%eth0',
];

test('isIPv4 and isIPv6 agree with node:net on hand-picked strings', () => {
  for (const s of CASES) {
    assert.equal(isIPv4(s), net.isIPv4(s), `isIPv4(${JSON.stringify(s)})`);
    assert.equal(isIPv6(s), net.isIPv6(s), `isIPv6(${JSON.stringify(s)})`);
  }
});

test('isIPv4 and isIPv6 agree with node:net on 20,000 generated strings', () => {
  const atoms = ['0', '1', '12', '255', '256', 'ff', 'ffff', '1ffff', ':', '::', '.', '%', 'e', '1.2.3.4'];
  let seed = 1;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  for (let i = 0; i < 20_000; i++) {
    let s = '';
    const n = 1 + rnd(12);
    for (let j = 0; j < n; j++) s += atoms[rnd(atoms.length)];
    assert.equal(isIPv4(s), net.isIPv4(s), `isIPv4(${JSON.stringify(s)})`);
    assert.equal(isIPv6(s), net.isIPv6(s), `isIPv6(${JSON.stringify(s)})`);
  }
});
