// How a worker thread's engine hands finished requests to runLoad: a batch of
// records in one Float64Array (its buffer is transferred, not copied), plus the
// tag strings (failure details, notes) first used since the previous batch.

export interface RecordBatch {
  t: 'records';
  n: number;
  /** per request, 3 numbers: start (ms since t0), latency (ms), outcome * TAG_SPAN + tag + 1 (tag -1: none) */
  data: Float64Array;
  /** tag strings first used since the last batch, in tag order */
  newTags: string[];
}

/** Tags per engine are few (error codes, bad-response reasons); Engine.tagId keeps them below this. */
export const TAG_SPAN = 1 << 20;

/** The third number of a record. */
export function recordCode(outcome: number, tag: number): number {
  return outcome * TAG_SPAN + tag + 1;
}

/** A record's outcome, from its code. */
export function codeOutcome(code: number): number {
  return Math.floor(code / TAG_SPAN);
}

/** A record's tag (-1: none), from its code. */
export function codeTag(code: number): number {
  return (code % TAG_SPAN) - 1;
}
