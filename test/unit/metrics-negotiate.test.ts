/**
 * Which exposition format the daemon answers for an Accept header
 * (src/protect/metrics.ts negotiate), as a table. OpenMetrics only when the
 * scraper prefers it; the Prometheus text format otherwise, which every scraper reads.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { negotiate } from '../../src/protect/metrics.js';

const OM = 'application/openmetrics-text; version=1.0.0; charset=utf-8';
const TEXT = 'text/plain; version=0.0.4; charset=utf-8';

const table: [string, string | undefined, string][] = [
  [
    'Prometheus 2.x',
    'application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1',
    OM,
  ],
  ['OpenMetrics only', 'application/openmetrics-text', OM],
  ['text preferred by q', 'application/openmetrics-text;q=0.2, text/plain;q=0.9', TEXT],
  ['equal q: the text format', 'application/openmetrics-text;q=0.5, text/plain;q=0.5', TEXT],
  ['text only', 'text/plain;version=0.0.4', TEXT],
  ['anything', '*/*', TEXT],
  ['no header (curl without -H)', undefined, TEXT],
  ['empty header', '', TEXT],
  ['OpenMetrics refused (q=0)', 'application/openmetrics-text;q=0, */*', TEXT],
  ['a malformed q is ignored', 'application/openmetrics-text;q=high, text/plain', TEXT],
  ['case does not matter', 'Application/OpenMetrics-Text', OM],
  ['something else only', 'application/json', TEXT],
];

for (const [what, accept, expected] of table) {
  test(`negotiate: ${what} -> ${expected === OM ? 'OpenMetrics' : 'text'}`, () => {
    assert.equal(negotiate(accept), expected);
  });
}
