/**
 * A lane: the work a workload publishes in shared memory before it rings. One producer, one
 * or more consumers (broadcast), a ring of fixed message slots.
 *
 * Bytes (all offsets 64-byte aligned, each counter on its own cache line):
 *
 * | offset              | what |
 * |---|---|
 * | 0                   | u32 head: messages published (the producer's sequence counter) |
 * | 4                   | u32 flag: the producer is idle (ping-pong: set by the responder once its handler is over) |
 * | 64 × (1 + k)        | u32 cursor of consumer k: messages it has finished with |
 * | 64 × (1 + C)        | slots × 16 bytes: f64 sequence number, f64 send time (ns since the run's epoch) |
 *
 * The producer writes a slot, then stores head (sequentially consistent: the slot's stores are
 * visible before the new head), then rings. A consumer loads head, reads the slots up to it,
 * checks each sequence number (a lost or torn message fails the cell) and stores its cursor.
 * The producer reuses a slot only once every consumer's cursor is past it.
 */

export const LINE = 64;
export const SLOT_BYTES = 16;

export interface LaneSpec {
  offset: number;
  slots: number;
  consumers: number;
}

export function laneBytes(slots: number, consumers: number): number {
  return LINE * (1 + consumers) + slots * SLOT_BYTES;
}

/** Lays out `count` lanes one after the other from `offset`; returns their specs. */
export function layoutLanes(offset: number, count: number, slots: number, consumers: number): LaneSpec[] {
  const bytes = Math.ceil(laneBytes(slots, consumers) / LINE) * LINE;
  return Array.from({ length: count }, (_, i) => ({ offset: offset + i * bytes, slots, consumers }));
}

export function lanesEnd(lanes: readonly LaneSpec[]): number {
  let end = 0;
  for (const l of lanes) end = Math.max(end, l.offset + laneBytes(l.slots, l.consumers));
  return end;
}

export class Lane {
  readonly slots: number;
  readonly mask: number;
  readonly consumers: number;
  readonly #ctrl: Uint32Array;
  readonly #data: Float64Array;
  // Producer side
  #head = 0;
  #minCursor = 0;
  // Consumer side, for the consumer this process is (if any)
  #cursor = 0;

  constructor(buffer: ArrayBuffer, spec: LaneSpec) {
    if (spec.offset % LINE !== 0) throw new RangeError(`lane offset ${spec.offset} is not ${LINE}-byte aligned`);
    if ((spec.slots & (spec.slots - 1)) !== 0) throw new RangeError(`lane slots ${spec.slots} is not a power of two`);
    this.slots = spec.slots;
    this.mask = spec.slots - 1;
    this.consumers = spec.consumers;
    this.#ctrl = new Uint32Array(buffer, spec.offset, (LINE / 4) * (1 + spec.consumers));
    this.#data = new Float64Array(buffer, spec.offset + LINE * (1 + spec.consumers), spec.slots * 2);
    this.#head = Atomics.load(this.#ctrl, 0);
    this.#minCursor = this.#head;
  }

  // ------------------------------------------------------------------ producer

  /** Slots free for the producer now (re-reads the consumers' cursors only when needed). */
  free(): number {
    let free = this.slots - ((this.#head - this.#minCursor) >>> 0);
    if (free > 0) return free;
    let min = this.#head;
    for (let k = 0; k < this.consumers; k++) {
      const c = Atomics.load(this.#ctrl, (LINE / 4) * (1 + k));
      if (((this.#head - c) >>> 0) > ((this.#head - min) >>> 0)) min = c;
    }
    this.#minCursor = min;
    free = this.slots - ((this.#head - min) >>> 0);
    return free;
  }

  /** Writes the next message and publishes it (the caller checked free() > 0). Returns its sequence number. */
  publish(sentAt: number): number {
    const seq = this.#head;
    const at = (seq & this.mask) * 2;
    this.#data[at] = seq;
    this.#data[at + 1] = sentAt;
    this.#head = (seq + 1) >>> 0;
    Atomics.store(this.#ctrl, 0, this.#head);
    return seq;
  }

  get published(): number {
    return this.#head;
  }

  /** The lane's idle flag (word 1 of the head line): set by its producer, cleared by whoever waits on it. */
  setFlag(value: number): void {
    Atomics.store(this.#ctrl, 1, value);
  }

  flag(): number {
    return Atomics.load(this.#ctrl, 1);
  }

  // ------------------------------------------------------------------ consumer

  /** Messages published and not yet taken by this process's consumer. */
  available(): number {
    return (Atomics.load(this.#ctrl, 0) - this.#cursor) >>> 0;
  }

  /**
   * Takes the next message as consumer `k`: returns its send time. Throws if the slot does
   * not hold the expected sequence number (a lost, duplicated or torn message).
   */
  take(k: number): number {
    const seq = this.#cursor;
    const at = (seq & this.mask) * 2;
    const found = this.#data[at]!;
    const sentAt = this.#data[at + 1]!;
    if (found !== seq) throw new Error(`lane check failed: expected message ${seq} in slot ${seq & this.mask}, found ${found}`);
    this.#cursor = (seq + 1) >>> 0;
    Atomics.store(this.#ctrl, (LINE / 4) * (1 + k), this.#cursor);
    return sentAt;
  }

  get taken(): number {
    return this.#cursor;
  }
}
