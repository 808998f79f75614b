/**
 * Latency histogram with logarithmic buckets (1 % wide): constant size whatever the message
 * count, mergeable across processes (broadcast receivers, fan-in), percentiles within 1 %.
 */

const GROWTH = 1.01;
const LOG_GROWTH = Math.log(GROWTH);
/** Bucket 0 holds everything below 1 ns; the last one everything above ~1.7e13 ns (4.8 h). */
const BUCKETS = 3100;

/** Sparse form for IPC and JSON: [bucket, count] pairs. */
export type HistogramData = [number, number][];

export class Histogram {
  readonly #counts = new Float64Array(BUCKETS);
  #total = 0;
  #min = Infinity;
  #max = -Infinity;

  static bucketOf(ns: number): number {
    if (!(ns >= 1)) return 0;
    return Math.min(BUCKETS - 1, 1 + Math.floor(Math.log(ns) / LOG_GROWTH));
  }

  /** The value a bucket stands for: the geometric middle of its bounds. */
  static valueOf(bucket: number): number {
    if (bucket === 0) return 0;
    return Math.pow(GROWTH, bucket - 1 + 0.5);
  }

  record(ns: number): void {
    this.#counts[Histogram.bucketOf(ns)]!++;
    this.#total++;
    if (ns < this.#min) this.#min = ns;
    if (ns > this.#max) this.#max = ns;
  }

  get count(): number {
    return this.#total;
  }

  merge(data: HistogramData): void {
    for (const [bucket, count] of data) {
      if (!Number.isInteger(bucket) || bucket < 0 || bucket >= BUCKETS || !(count >= 0)) {
        throw new RangeError(`bad histogram entry [${bucket}, ${count}]`);
      }
      this.#counts[bucket]! += count;
      this.#total += count;
      const v = Histogram.valueOf(bucket);
      if (count > 0 && v < this.#min) this.#min = v;
      if (count > 0 && v > this.#max) this.#max = v;
    }
  }

  /** The value at quantile `q` (0..1), or null when empty. Exact to the bucket (1 %). */
  quantile(q: number): number | null {
    if (this.#total === 0) return null;
    const rank = Math.max(1, Math.ceil(q * this.#total));
    let seen = 0;
    for (let b = 0; b < BUCKETS; b++) {
      seen += this.#counts[b]!;
      if (seen >= rank) {
        // Never outside what was recorded (the bucket's middle can be).
        return Math.min(this.#max, Math.max(this.#min, Histogram.valueOf(b)));
      }
    }
    return this.#max;
  }

  toJSON(): HistogramData {
    const out: HistogramData = [];
    for (let b = 0; b < BUCKETS; b++) if (this.#counts[b]! > 0) out.push([b, this.#counts[b]!]);
    return out;
  }
}

/** Percentile of plain samples (nearest rank); null when empty. */
export function percentile(samples: readonly number[], q: number): number | null {
  if (samples.length === 0) return null;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil(q * sorted.length));
  return sorted[Math.min(sorted.length, rank) - 1]!;
}
