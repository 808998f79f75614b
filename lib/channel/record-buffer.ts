/**
 * One channel's record buffer (a circular SPSC buffer of length-prefixed records, layout in
 * docs/channel.md) as seen from either end, and the consumer's walk over it. Not called a
 * "ring": in this package to ring is what a doorbell does.
 */
import { CorruptError } from '../core/errors.js';
import type { Endpoint } from '../endpoint/endpoint.js';
import * as check from '../core/validate.js';
import { CHANNEL_HEADER_BYTES, maxMessage, PAD, readChannelHeader, recordSize, Word, type ChannelInfo } from '../protocol/channel-layout.js';
import { lowBuffer } from '../sys/shared-memory.js';

export class RecordBuffer {
  readonly words: Uint32Array;
  readonly data: Uint8Array;
  readonly lengths: Uint32Array;
  readonly capacity: number;
  readonly mask: number;
  readonly max: number;
  readonly producer: number;
  readonly consumer: number;

  constructor(
    readonly peer: Endpoint,
    readonly offset: number,
    info: ChannelInfo,
  ) {
    const buffer = lowBuffer(peer.shm);
    this.words = new Uint32Array(buffer, offset, CHANNEL_HEADER_BYTES / 4);
    this.data = new Uint8Array(buffer, offset + CHANNEL_HEADER_BYTES, info.capacity);
    this.lengths = new Uint32Array(buffer, offset + CHANNEL_HEADER_BYTES, info.capacity / 4);
    this.capacity = info.capacity;
    this.mask = info.capacity - 1;
    this.max = maxMessage(info.capacity);
    this.producer = info.producer;
    this.consumer = info.consumer;
  }

  head(): number {
    return Atomics.load(this.words, Word.head);
  }
  tail(): number {
    return Atomics.load(this.words, Word.tail);
  }
  closedByProducer(): boolean {
    return Atomics.load(this.words, Word.closed) !== 0;
  }
}

export function openRecordBuffer(peer: Endpoint, offset: number, role: 'producer' | 'consumer'): RecordBuffer {
  check.integer('offset', offset, 0);
  const info = readChannelHeader(lowBuffer(peer.shm), offset);
  if (info[role] !== peer.id) {
    throw new RangeError(`the channel at ${offset} has ${role} ${info[role]}, not this peer (${peer.id})`);
  }
  return new RecordBuffer(peer, offset, info);
}

/**
 * Writes `message` as the record at `head` if the space between `head` and `tail` holds it
 * (with the pad before it, when it would cross the end); returns the new head, or -1 if there
 * is no room. Nothing is published: the caller stores the head. RangeError for a message that
 * can never fit.
 */
export function putRecord(buffer: RecordBuffer, head: number, tail: number, message: Uint8Array): number {
  check.bytes('message', message);
  const length = message.byteLength;
  if (length > buffer.max) {
    throw new RangeError(`a message of ${length} bytes is larger than this channel carries (${buffer.max})`);
  }
  const capacity = buffer.capacity;
  const size = recordSize(length);
  const pos = head & buffer.mask;
  const contiguous = capacity - pos;
  if (capacity - ((head - tail) >>> 0) < (contiguous < size ? contiguous + size : size)) return -1;
  let at = pos;
  if (contiguous < size) {
    buffer.lengths[pos >> 2] = PAD;
    head += contiguous;
    at = 0;
  }
  buffer.data.set(message, at + 4);
  buffer.lengths[at >> 2] = length;
  return (head + size) >>> 0;
}

/**
 * The consumer's position in one buffer. Everything before `tail` was handed out; `stored` is
 * the tail as written to the memory (space given back); between the two lie messages still in
 * use. `head` is the head as last read: the walk reads the shared line only when it runs out.
 */
export class Reader {
  tail: number;
  stored: number;
  head: number;
  /** The length of the record next() found last. */
  length = 0;
  /** The producer's peer left the network. */
  gone = false;

  constructor(
    readonly buffer: RecordBuffer,
    // Told of a corrupt buffer before next() throws (the consumer then refuses every read).
    private readonly onCorrupt: (error: CorruptError) => void,
  ) {
    this.tail = this.stored = this.head = buffer.tail();
  }

  /**
   * The next committed record: its payload's position in the data (its length in `length`),
   * reading moved past it; -1 if none. Every index and length is checked against what the
   * head published before anything is read; CorruptError if one is impossible.
   */
  next(): number {
    const buffer = this.buffer;
    for (;;) {
      const tail = this.tail;
      let head = this.head;
      if (head === tail) {
        head = this.head = Atomics.load(buffer.words, Word.head);
        if (head === tail) return -1;
      }
      const used = (head - tail) >>> 0;
      if (used > buffer.capacity || (used & 7) !== 0) throw this.#corrupt(`head ${head} and tail ${tail} are ${used} bytes apart`);
      const pos = tail & buffer.mask;
      const length = buffer.lengths[pos >> 2]!;
      if (length === PAD) {
        const skip = buffer.capacity - pos;
        if (skip > used) throw this.#corrupt(`a pad of ${skip} bytes at ${pos} runs past the head`);
        this.tail = (tail + skip) >>> 0;
        continue;
      }
      const size = recordSize(length);
      if (length > buffer.max || size > used || pos + size > buffer.capacity) {
        throw this.#corrupt(`a record of ${length} bytes at ${pos} does not fit (${used} bytes committed)`);
      }
      this.tail = (tail + size) >>> 0;
      this.length = length;
      return pos + 4;
    }
  }

  /** Something is committed beyond what was read (reads the shared head). */
  available(): boolean {
    return this.buffer.head() !== this.tail;
  }

  /** Bytes read but not yet given back. */
  held(): number {
    return (this.tail - this.stored) >>> 0;
  }

  /** Stores the tail (gives the space back); true if the producer waits for space and can be
   * rung: the flag is taken then, and the caller rings. */
  commit(): boolean {
    const buffer = this.buffer;
    this.stored = this.tail;
    Atomics.store(buffer.words, Word.tail, this.tail);
    // Tail stored (a full fence), then the flag read: see ChannelProducer's wait for space.
    return this.takeWaiting();
  }

  /** Takes the producer's waiting flag if it is set and the producer can be rung. */
  takeWaiting(): boolean {
    const buffer = this.buffer;
    if (Atomics.load(buffer.words, Word.waiting) !== 1 || buffer.peer.vectorsOf(buffer.producer) === 0) return false;
    return Atomics.compareExchange(buffer.words, Word.waiting, 1, 0) === 1;
  }

  #corrupt(what: string): CorruptError {
    const error = new CorruptError(`channel at offset ${this.buffer.offset} is corrupt: ${what}`);
    this.onCorrupt(error);
    return error;
  }
}
