/** The median of xs (the mean of the two middle values for an even count); NaN for none. One copy for every bench page. */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * A distribution-free confidence interval for the median of xs (order statistics: the
 * k-th smallest and k-th largest values, k the largest rank with P(Binomial(n, 1/2) < k)
 * <= (1 - level) / 2). Needs no assumption about the noise's shape, only independent
 * rounds; undefined when n is too small for the level (n < 6 at 95%).
 */
export function medianInterval(xs: readonly number[], level = 0.95): { low: number; high: number } | undefined {
  const n = xs.length;
  const tail = (1 - level) / 2;
  // cdf(j) = P(B < j+1) = sum_{i<=j} C(n,i) / 2^n, in logs so that n in the hundreds stays finite.
  let logC = 0; // log C(n, 0)
  let cdf = 0;
  let k = 0; // ranks 1..k may bound the interval
  for (let i = 0; i < n; i++) {
    cdf += Math.exp(logC - n * Math.LN2);
    if (cdf > tail) break;
    k = i + 1;
    logC += Math.log((n - i) / (i + 1));
  }
  if (k === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  return { low: s[k - 1]!, high: s[n - k]! };
}
