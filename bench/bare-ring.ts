/**
 * The ceiling of a channel in JavaScript: the channel's record format (u32 length + payload,
 * 8-byte aligned, head at +64, tail at +128, data at +256) over the same shared memory, with
 * no library code on the path. The producer writes as many records as fit and publishes the
 * head once per batch; the consumer reads the head once, walks the records and stores the tail
 * once. Both ends spin (no doorbell, no checks): what is left is the memory and the JIT. A
 * record that would cross the end is preceded by the pad marker, as in the channel.
 */
import type { Clock } from './clock.js';
import type { BaselineRole } from './baseline-roles.js';
import type { Collected, Finished, RoleSpec } from './protocol.js';

const HEAD = 64 / 4;
const TAIL = 128 / 4;
const DATA = 256;
const PAD = 0xffffffff;
/** A spinning end gives up after this long (the cell's deadline kills it anyway). */
const SPIN_LIMIT_MS = 120_000;
const NO_COUNTS: Collected = { totals: null, trapsByRegister: null };

function deadlineCheck(started: number): void {
  if (performance.now() - started > SPIN_LIMIT_MS) throw new Error('the bare ring made no progress');
}

export function ringProducer(spec: Extract<RoleSpec, { kind: 'ring-producer' }>, clock: Clock, memory: ArrayBuffer): BaselineRole {
  const words = new Uint32Array(memory, spec.offset, DATA / 4);
  const data = new Uint8Array(memory, spec.offset + DATA, spec.capacity);
  const lengths = new Uint32Array(memory, spec.offset + DATA, spec.capacity / 4);
  const message = new Uint8Array(spec.size).fill(0x5a);
  const size = (4 + spec.size + 7) & ~7;
  const cap = spec.capacity;
  const mask = cap - 1;
  words.fill(0);
  return {
    arm(): void {},
    async go(): Promise<Finished> {
      const started = performance.now();
      const startNs = clock.now();
      let head = 0;
      let spins = 0;
      for (let left = spec.messages; left > 0; ) {
        const tail = Atomics.load(words, TAIL);
        let wrote = 0;
        while (left > 0) {
          const pos = head & mask;
          const contiguous = cap - pos;
          const need = contiguous < size ? contiguous + size : size;
          if (cap - ((head - tail) >>> 0) < need) break;
          let at = pos;
          if (contiguous < size) {
            lengths[pos >> 2] = PAD;
            head = (head + contiguous) >>> 0;
            at = 0;
          }
          data.set(message, at + 4);
          lengths[at >> 2] = spec.size;
          head = (head + size) >>> 0;
          left--;
          wrote++;
        }
        if (wrote > 0) Atomics.store(words, HEAD, head);
        else if (++spins % 1_000_000 === 0) deadlineCheck(started);
      }
      return { startNs, endNs: clock.now(), latency: null, count: spec.messages };
    },
    stop: async () => NO_COUNTS,
  };
}

export function ringConsumer(spec: Extract<RoleSpec, { kind: 'ring-consumer' }>, clock: Clock, memory: ArrayBuffer): BaselineRole {
  const words = new Uint32Array(memory, spec.offset, DATA / 4);
  const lengths = new Uint32Array(memory, spec.offset + DATA, spec.capacity / 4);
  const data = new Uint8Array(memory, spec.offset + DATA, spec.capacity);
  const cap = spec.capacity;
  const mask = cap - 1;
  return {
    arm(): void {},
    async go(): Promise<Finished> {
      const started = performance.now();
      let tail = 0;
      let count = 0;
      let spins = 0;
      let check = 0;
      while (count < spec.messages) {
        const head = Atomics.load(words, HEAD);
        if (head === tail) {
          if (++spins % 1_000_000 === 0) deadlineCheck(started);
          continue;
        }
        while (tail !== head) {
          const pos = tail & mask;
          const length = lengths[pos >> 2]!;
          if (length === PAD) {
            tail = (tail + cap - pos) >>> 0;
            continue;
          }
          check ^= data[pos + 4]!; // touch the payload, as a reader would
          tail = (tail + ((4 + length + 7) & ~7)) >>> 0;
          count++;
        }
        Atomics.store(words, TAIL, tail);
      }
      if (check === -1) throw new Error('unreachable');
      return { startNs: null, endNs: clock.now(), latency: null, count };
    },
    stop: async () => NO_COUNTS,
  };
}
