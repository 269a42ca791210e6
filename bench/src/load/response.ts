// What one request came to: the outcome classes, a socket error's class, and
// the check of a whole HTTP/1.x response read until the server's FIN.
//
// Shared by the load generator's engines (which may run in worker threads) and
// its callers, so it imports nothing heavier than Buffer.

export type Outcome = 'ok' | 'reset' | 'refused' | 'timeout' | 'badResponse';
/** In this order everywhere; an outcome's index is its code in the engines' record batches. */
export const OUTCOMES: readonly Outcome[] = ['ok', 'reset', 'refused', 'timeout', 'badResponse'];
export type FailureOutcome = Exclude<Outcome, 'ok'>;
export const FAILURE_OUTCOMES: readonly FailureOutcome[] = ['reset', 'refused', 'timeout', 'badResponse'];

export const OUTCOME_OK = 0;
export const OUTCOME_RESET = 1;
export const OUTCOME_REFUSED = 2;
export const OUTCOME_TIMEOUT = 3;
export const OUTCOME_BAD_RESPONSE = 4;

/** Classify a socket error. */
export function classifyError(code: string | undefined): Outcome {
  switch (code) {
    case 'ECONNREFUSED':
      return 'refused';
    case 'ECONNRESET':
    case 'EPIPE':
      return 'reset';
    case 'ETIMEDOUT':
      return 'timeout';
    default:
      return 'badResponse';
  }
}

/** classifyError as an outcome code. */
export function errorOutcome(code: string): number {
  switch (code) {
    case 'ECONNREFUSED':
      return OUTCOME_REFUSED;
    case 'ECONNRESET':
    case 'EPIPE':
      return OUTCOME_RESET;
    case 'ETIMEDOUT':
      return OUTCOME_TIMEOUT;
    default:
      return OUTCOME_BAD_RESPONSE;
  }
}

export interface ParsedResponse {
  complete: boolean;
  status?: number;
  body?: string;
  reason?: string;
}

/** Parse a whole HTTP/1.x response (as read until the server's FIN). */
export function parseResponse(buf: Buffer): ParsedResponse {
  const sep = buf.indexOf('\r\n\r\n');
  if (buf.length === 0) return { complete: false, reason: 'empty' };
  if (sep < 0) return { complete: false, reason: 'no-header-end' };
  const head = buf.subarray(0, sep).toString('latin1');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
  if (!m) return { complete: false, reason: 'bad-status-line' };
  const status = Number(m[1]);
  let body = buf.subarray(sep + 4);
  const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
  if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
    const dec = decodeChunked(body);
    if (!dec) return { complete: false, status, reason: 'truncated' };
    body = dec;
  } else if (cl) {
    const n = Number(cl[1]);
    if (body.length < n) return { complete: false, status, reason: 'truncated' };
    body = body.subarray(0, n);
  }
  return { complete: true, status, body: body.toString('utf8') };
}

function decodeChunked(b: Buffer): Buffer | null {
  const parts: Buffer[] = [];
  let i = 0;
  for (let guard = 0; guard < 10_000; guard++) {
    const eol = b.indexOf('\r\n', i);
    if (eol < 0) return null;
    const size = parseInt(b.subarray(i, eol).toString('latin1'), 16);
    if (!Number.isFinite(size)) return null;
    if (size === 0) return Buffer.concat(parts);
    if (eol + 2 + size > b.length) return null;
    parts.push(b.subarray(eol + 2, eol + 2 + size));
    i = eol + 2 + size + 2;
  }
  return null;
}

/** What an ok response must carry, prepared once per run. */
export interface Expectation {
  /** the body an ok response must have; null accepts any 200 */
  body: string | null;
  /** its UTF-8 bytes, for the byte-level check; null when that check cannot stand in for the string compare */
  bytes: Buffer | null;
  /** may the byte-level check answer "ok" at all */
  quick: boolean;
}

export function expectation(body: string | null): Expectation {
  if (body === null) return { body, bytes: null, quick: true };
  const bytes = Buffer.from(body, 'utf8');
  // A string that does not survive UTF-8 (a lone surrogate) never equals a
  // decoded body; only parseResponse's string compare may judge it.
  const quick = bytes.toString('utf8') === body;
  return { body, bytes, quick };
}

/**
 * Why a whole response is not the ok one: null when it is (status 200 and,
 * unless the expected body is null, exactly that body), else the reason counted
 * in `details` ("status-503", "wrong-body", "truncated", ...). The same verdict
 * as parseResponse, without its strings and objects in the common case. The
 * response is the first `len` bytes of `buf`.
 */
export function responseProblem(buf: Buffer, len: number, expect: Expectation): string | null {
  if (expect.quick && quickOk(buf, len, expect.bytes)) return null;
  const p = parseResponse(buf.subarray(0, len));
  if (!p.complete) return p.reason ?? 'incomplete';
  if (p.status !== 200) return `status-${p.status}`;
  if (expect.body !== null && p.body !== expect.body) return 'wrong-body';
  return null;
}

// "HTTP/1." then 0 or 1, " 200"
const C_H = 0x48;
const C_T = 0x54;
const C_P = 0x50;
const C_SLASH = 0x2f;
const C_1 = 0x31;
const C_0 = 0x30;
const C_DOT = 0x2e;
const C_SP = 0x20;
const C_2 = 0x32;
const C_CR = 0x0d;
const C_LF = 0x0a;
const CONTENT_LENGTH = Buffer.from('content-length:', 'latin1');
const TRANSFER_ENCODING = Buffer.from('transfer-encoding:', 'latin1');

/** Does header line [from, to) start with `name` (lower case, compared case-insensitively)? */
function headerIs(buf: Buffer, from: number, to: number, name: Buffer): boolean {
  if (to - from < name.length) return false;
  for (let i = 0; i < name.length; i++) {
    // ASCII letters: OR-ing 0x20 lowers them; ':' and '-' are unchanged by it
    if ((buf[from + i]! | 0x20) !== name[i]) return false;
  }
  return true;
}

/**
 * True only for the plain ok response: "HTTP/1.x 200", a Content-Length, no
 * Transfer-Encoding, and the expected body. Anything else (false) goes to
 * parseResponse for the exact reason; so this must never say true where
 * parseResponse would not (it is checked against it in the tests).
 */
function quickOk(buf: Buffer, len: number, expectBytes: Buffer | null): boolean {
  if (len < 16) return false;
  if (buf[0] !== C_H || buf[1] !== C_T || buf[2] !== C_T || buf[3] !== C_P || buf[4] !== C_SLASH || buf[5] !== C_1 || buf[6] !== C_DOT) return false;
  if ((buf[7] !== C_0 && buf[7] !== C_1) || buf[8] !== C_SP || buf[9] !== C_2 || buf[10] !== C_0 || buf[11] !== C_0) return false;
  let contentLength = -1;
  // Header lines: each starts after a CRLF; an empty one ends the head. (A
  // byte loop, not buf.indexOf: a call into C++ per line costs more than
  // scanning a few dozen bytes.)
  let i = 12;
  while (i < len && buf[i] !== C_LF) i++;
  for (;;) {
    if (i >= len || buf[i - 1] !== C_CR) return false;
    const from = i + 1;
    let eol = from;
    while (eol < len && buf[eol] !== C_LF) eol++;
    if (eol >= len) return false;
    if (eol === from + 1 && buf[from] === C_CR) {
      // end of head
      if (contentLength < 0) return false;
      const bodyStart = eol + 1;
      if (len - bodyStart < contentLength) return false;
      if (expectBytes === null) return true;
      if (contentLength !== expectBytes.length) return false;
      for (let k = 0; k < contentLength; k++) if (buf[bodyStart + k] !== expectBytes[k]) return false;
      return true;
    }
    if (headerIs(buf, from, eol, TRANSFER_ENCODING)) return false;
    if (headerIs(buf, from, eol, CONTENT_LENGTH)) {
      if (contentLength >= 0) return false; // twice: let the slow path decide
      let j = from + CONTENT_LENGTH.length;
      while (j < eol && (buf[j] === C_SP || buf[j] === 0x09)) j++;
      let n = 0;
      let digits = 0;
      while (j < eol && buf[j]! >= C_0 && buf[j]! <= 0x39 && digits < 9) {
        n = n * 10 + (buf[j]! - C_0);
        j++;
        digits++;
      }
      if (digits === 0 || j !== eol - 1) return false;
      contentLength = n;
    }
    i = eol;
  }
}
