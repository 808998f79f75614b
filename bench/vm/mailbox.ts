/**
 * How the bench on the host talks to its agent in the guest: two one-slot mailboxes in the
 * shared memory (BAR2 in the guest), one per direction, carrying JSON. Memory, not a serial
 * line or a 9p file, so that talking costs the guest no trap and no interrupt that the counts
 * could pick up (polling RAM is free).
 *
 * Bytes at `offset` (64-byte aligned), each direction `bytes` of payload:
 *
 * | offset                 | what |
 * |---|---|
 * | 0 / 64                 | u32 seq: messages written host→guest / guest→host |
 * | 4 / 68                 | u32 length of the message in the slot |
 * | 8 / 72                 | u32 ack: messages the reader has taken (the writer waits for ack == seq) |
 * | 128                    | host→guest payload |
 * | 128 + bytes            | guest→host payload |
 *
 * A writer waits until the reader took the previous message, writes the payload and its
 * length, then publishes with one store of seq; the reader copies the payload out, then acks.
 */
import { BenchError } from '../pool.js';

export type Side = 'host' | 'guest';

const HEADER = 128;

export function mailboxBytes(bytes: number): number {
  return HEADER + 2 * bytes;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export class Mailbox {
  readonly #words: Int32Array;
  readonly #out: { seq: number; len: number; ack: number; data: Uint8Array };
  readonly #in: { seq: number; len: number; ack: number; data: Uint8Array };
  readonly #pollMs: number;
  readonly #encoder = new TextEncoder();
  readonly #decoder = new TextDecoder();
  #closed = false;

  constructor(buffer: ArrayBuffer, offset: number, bytes: number, side: Side, pollMs = 1) {
    if (offset % 64 !== 0) throw new RangeError(`mailbox offset ${offset} is not 64-byte aligned`);
    this.#words = new Int32Array(buffer, offset, HEADER / 4);
    const h2g = { seq: 0, len: 1, ack: 2, data: new Uint8Array(buffer, offset + HEADER, bytes) };
    const g2h = { seq: 16, len: 17, ack: 18, data: new Uint8Array(buffer, offset + HEADER + bytes, bytes) };
    [this.#out, this.#in] = side === 'host' ? [h2g, g2h] : [g2h, h2g];
    this.#pollMs = pollMs;
  }

  /** Zeroes both directions (the host, before the guest starts). */
  reset(): void {
    this.#words.fill(0);
  }

  /** Writes `message` once the other side took the previous one; rejects after `timeoutMs`. */
  async send(message: unknown, timeoutMs: number): Promise<void> {
    const text = this.#encoder.encode(JSON.stringify(message));
    if (text.length > this.#out.data.length) throw new BenchError(`mailbox message of ${text.length} bytes > ${this.#out.data.length}`);
    const w = this.#words;
    const end = Date.now() + timeoutMs;
    while (Atomics.load(w, this.#out.ack) !== Atomics.load(w, this.#out.seq)) {
      if (this.#closed) throw new BenchError('mailbox closed');
      if (Date.now() > end) throw new BenchError(`timed out after ${timeoutMs} ms: the other side does not take its mailbox`);
      await sleep(this.#pollMs);
    }
    this.#out.data.set(text);
    Atomics.store(w, this.#out.len, text.length);
    Atomics.store(w, this.#out.seq, (Atomics.load(w, this.#out.seq) + 1) | 0);
  }

  /** The next message if there is one (taken and acked), else undefined. */
  take(): unknown {
    const w = this.#words;
    const seq = Atomics.load(w, this.#in.seq);
    if (seq === Atomics.load(w, this.#in.ack)) return undefined;
    const len = Atomics.load(w, this.#in.len);
    if (len < 0 || len > this.#in.data.length) throw new BenchError(`mailbox: bad message length ${len}`);
    const text = this.#decoder.decode(this.#in.data.slice(0, len));
    Atomics.store(w, this.#in.ack, seq);
    return JSON.parse(text) as unknown;
  }

  /** Waits for the next message; rejects after `timeoutMs`, or once closed. */
  async receive(timeoutMs: number, what = 'a message'): Promise<unknown> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const m = this.take();
      if (m !== undefined) return m;
      if (this.#closed) throw new BenchError('mailbox closed');
      if (Date.now() > end) throw new BenchError(`timed out after ${(timeoutMs / 1000).toFixed(1)} s waiting for ${what}`);
      await sleep(this.#pollMs);
    }
  }

  /** Ends every wait. Idempotent. */
  close(): void {
    this.#closed = true;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
