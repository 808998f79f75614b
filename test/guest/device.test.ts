/**
 * GuestDevice in a real guest, one boot: Node inside the VM drives QEMU's ivshmem-doorbell through
 * VFIO (test/fixtures/guest/device.mjs) against a host Peer of a bitmask PeerServer.
 *
 * - Rings both ways on both vectors; memory written on either side is read on the other.
 * - The bitmask host -> guest with the guest busy, and guest -> host with the host busy:
 *   of 10^4 rings at least 99 % suppressed, no eventfd write on the host and no interrupt in the
 *   guest (counted by the guest kernel too) for them, and no Doorbell write (counted by QEMU:
 *   `ioeventfd=off` and its `memory_region_ops_write` trace) for the guest's.
 * - Channels host -> guest and guest -> host, 10^5 checked messages each.
 * - Leaves: the guest program closing (its lease released), a guest program killed (its lease
 *   expires), and the VM powered off while a program runs are each seen by the host as a leave.
 *
 * Coordination: step words at the start of the data (WORDS); every wait has a deadline.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BitmaskDoorbell, channelBytes, ChannelConsumer, ChannelProducer, createChannel, type InterruptCounters } from '../../lib/index.js';
import { addSum, isMessage, message } from '../fixtures/guest/messages.mjs';
import { killAllChildren } from '../helpers/children.js';
import { bootGuest, type Guest, GUEST_RESULTS, guestAssets, guestUnavailable } from '../helpers/guest.js';
import { makeTempDir, removeDir, requireBuilt } from '../helpers/paths.js';
import { Resources } from '../helpers/resources.js';
import { EventRecorder, sleep, waitFor, within } from '../helpers/wait.js';

const why = guestUnavailable();
if (why !== null) console.warn(why);

const RINGS = 10_000;
const PINGS = 200;
const MESSAGES = 100_000;
const CAPACITY = 65536;
const MAGIC = 0x47444556;
const WORDS = { hostReady: 0, hostId: 1, guestStep: 2, hostStep: 3, produced: 4, processed: 5, guestProduced: 6, hostProcessed: 7, pingReady: 8 };
const HOST_MARKER = 'written by the host Peer';
const GUEST_MARKER = 'written by Node in the guest';

interface DeviceReport {
  open?: { id: number; vectors: number; address: string; interrupts: string; size: number; info: { driver: string | null; iommuGroup: number | null; revision: number } };
  peers?: { id: number; vectors: number }[];
  ivposition?: number;
  hostMarker?: string;
  ringsReceived?: number[];
  pongs?: number;
  hostToGuest?: { counters: InterruptCounters; handled: number; kernelBefore: { name: string; total: number }[]; kernelAfter: { name: string; total: number }[] };
  guestToHost?: { counters: InterruptCounters; rang: number };
  h2gResult?: { received: number; bad: number; sum: number; ms: number };
  g2hResult?: { sent: number; sum: number; ms: number };
  countersAtEnd?: InterruptCounters;
  closed?: boolean;
  driverAfterClose?: string;
  error?: unknown;
}

const res = new Resources();
let guest: Guest | undefined;
let traceDir: string | undefined;

afterEach(async () => {
  await guest?.close();
  guest = undefined;
  await killAllChildren();
  res.closeAll();
  if (traceDir !== undefined) removeDir(traceDir);
  traceDir = undefined;
});

function diff(a: InterruptCounters, b: InterruptCounters): InterruptCounters {
  return Object.fromEntries(Object.keys(b).map((k) => [k, b[k as keyof InterruptCounters] - a[k as keyof InterruptCounters]])) as unknown as InterruptCounters;
}

const pct = (n: number, of: number): string => `${((100 * n) / of).toFixed(2)} %`;

describe.skipIf(why !== null)('GuestDevice in a QEMU guest: the endpoint inside the VM', () => {
  beforeAll(async () => {
    await guestAssets();
  }, 10 * 60_000);

  afterAll(() => killAllChildren());

  it('rings, memory, the bitmask both ways, 10^5-message channels both ways; a closed, a killed and a powered-off guest program are leaves', async () => {
    requireBuilt();
    const server = res.listen('gdev', { bitmask: true, vectors: 2, size: 4 << 20 });
    const host = await res.connect(server, { bitmask: true });
    const coord = server.dataOffset;
    const words = new Int32Array(host.shm.buffer, coord, 64);
    const h2gOffset = coord + 4096;
    const g2hOffset = h2gOffset + channelBytes(CAPACITY);
    const params = {
      coord, words: WORDS, magic: MAGIC, rings: RINGS, pings: PINGS, messages: MESSAGES, h2gOffset, g2hOffset,
      hostMarker: HOST_MARKER, hostMarkerOffset: coord + 512, guestMarker: GUEST_MARKER, guestMarkerOffset: coord + 1024,
    };
    const hostEvents = new EventRecorder(host, ['peer-joined', 'peer-left', 'interrupt']);
    const serverEvents = new EventRecorder(server, ['peer-joined', 'peer-left']);
    traceDir = makeTempDir('guest-trace');
    const traceFile = join(traceDir, 'qemu.trace');

    const script = `
R=${GUEST_RESULTS}
cat > $R/params.json <<'PARAMS_END'
${JSON.stringify(params)}
PARAMS_END
node test/fixtures/guest/device.mjs $R > $R/device.out 2> $R/device.err
echo "device.mjs exit $?"
waitfile() { i=0; while [ ! -e "$1" ]; do i=$((i+1)); [ $i -gt 600 ] && { echo "no $1"; exit 20; }; sleep 0.1; done; }
node test/fixtures/guest/hold.mjs $R kill 2> $R/hold-kill.err &
pid=$!
waitfile $R/hold-kill.ready
kill -9 $pid
echo "hold.mjs killed"
waitfile $R/host-saw-kill
node test/fixtures/guest/hold.mjs $R poweroff 2> $R/hold-poweroff.err &
waitfile $R/hold-poweroff.ready
waitfile $R/host-saw-join
echo "powering off with hold.mjs running"
`;
    guest = await bootGuest({
      ivshmemSocket: server.socketPath,
      vectors: 2,
      vfio: true,
      deviceProperties: 'ioeventfd=off',
      trace: { events: ['memory_region_ops_write'], file: traceFile },
      script,
      timeoutMs: 170_000,
    });
    const g = guest;
    const context = (): string => {
      const read = (f: string): string => (existsSync(join(g.shareDir, f)) ? readFileSync(join(g.shareDir, f), 'utf8') : `(no ${f})`);
      return `\ndevice.json: ${read('device.json')}\ndevice.err: ${read('device.err')}${g.diagnostics()}`;
    };
    // The guest's program failing ends every wait at once (its report is written on the way out).
    const failed = (): void => {
      if (existsSync(join(g.shareDir, 'device.json')) && readFileSync(join(g.shareDir, 'device.json'), 'utf8').includes('"error"')) {
        throw new Error(`the guest's program failed${context()}`);
      }
    };
    const step = (word: number, value: number, what: string, ms = 90_000): Promise<unknown> =>
      waitFor(() => (failed(), Atomics.load(words, word) >= value), () => `${what}${context()}`, ms);

    const count = (event: string): number => hostEvents.all(event).length;
    const seen = (event: string, n: number, what: string): Promise<unknown> => waitFor(() => count(event) >= n, () => `${what}${context()}`, 60_000);
    await seen('peer-joined', 1, 'the guest (QEMU) to join');
    const guestId = hostEvents.all('peer-joined')[0]![0] as number;
    new TextEncoder().encodeInto(HOST_MARKER, host.shm.bytes(params.hostMarkerOffset, 64));
    createChannel(host, { offset: h2gOffset, capacity: CAPACITY, producer: host.id, consumer: guestId });
    createChannel(host, { offset: g2hOffset, capacity: CAPACITY, producer: guestId, consumer: host.id });
    Atomics.store(words, WORDS.hostId, host.id);
    Atomics.store(words, WORDS.hostReady, MAGIC);

    // A: the guest rang us on vectors 0 and 1; we ring it on both.
    await step(WORDS.guestStep, 1, 'the guest to open the device and ring');
    const fromGuest = (v: number): number => hostEvents.log.filter((r) => r.event === 'interrupt' && r.args[0] === v).reduce((n, r) => n + (r.args[1] as number), 0);
    await waitFor(() => fromGuest(0) >= 1 && fromGuest(1) >= 1, () => `the guest's rings on vectors 0 and 1${context()}`);
    expect(new TextDecoder().decode(host.shm.bytes(params.guestMarkerOffset, GUEST_MARKER.length))).toBe(GUEST_MARKER);
    host.ring(guestId, 0);
    host.ring(guestId, 1);

    // Round trips: host ring (vector 0) -> guest 'interrupt' -> guest ring() -> host 'interrupt' (vector 1).
    await step(WORDS.pingReady, 1, 'the guest to answer pings');
    const rtt: number[] = [];
    let answered: (() => void) | null = null;
    const onAnswer = (v: number): void => {
      if (v === 1) answered?.();
    };
    host.on('interrupt', onAnswer);
    for (let i = 0; i < PINGS; i++) {
      const answer = new Promise<void>((resolve) => (answered = resolve));
      const t = performance.now();
      host.ring(guestId, 0);
      await within(answer, () => `the guest's answer to ping ${i}${context()}`, 10_000);
      rtt.push(performance.now() - t);
    }
    host.off('interrupt', onAnswer);
    rtt.sort((x, y) => x - y);
    const p = (q: number): string => rtt[Math.min(rtt.length - 1, Math.floor(q * rtt.length))]!.toFixed(3);

    // B: bitmask host -> guest, the guest busy: 100 bursts of 100 rings.
    await step(WORDS.guestStep, 2, 'the guest to serve its bitmask');
    const bell = res.track(new BitmaskDoorbell(host));
    const beforeB = host.counters();
    for (let i = 0; i < RINGS; i++) {
      Atomics.add(words, WORDS.produced, 1);
      bell.ring(guestId);
      if (i % 100 === 99) await sleep(1);
    }
    const hostB = diff(beforeB, host.counters());
    await step(WORDS.processed, RINGS, 'the guest to process the host\'s work');

    // C: bitmask guest -> host, the host busy (30 ms per wakeup).
    const stopC = new AbortController();
    let hostProcessed = 0;
    const beforeC = host.counters();
    const served = bell.serve(
      () => hostProcessed < Atomics.load(words, WORDS.guestProduced),
      async () => {
        await sleep(30);
        hostProcessed = Atomics.load(words, WORDS.guestProduced);
        Atomics.store(words, WORDS.hostProcessed, hostProcessed);
      },
      { signal: stopC.signal },
    );
    Atomics.store(words, WORDS.hostStep, 3);
    await step(WORDS.guestStep, 4, 'the guest to ring 10^4 times');
    stopC.abort();
    await served;
    const hostC = diff(beforeC, host.counters());
    bell.close();

    // D: 10^5 checked messages each way, at the same time.
    await step(WORDS.guestStep, 5, 'the guest to open its channel ends');
    const producer = res.track(new ChannelProducer(host, h2gOffset));
    const consumer = res.track(new ChannelConsumer(host, g2hOffset));
    const t0 = performance.now();
    const sending = (async () => {
      let sum = 0;
      for (let seq = 0; seq < MESSAGES; seq++) {
        const m = message(seq);
        sum = addSum(sum, m);
        if (!producer.trySend(m)) await producer.send(m);
      }
      return sum;
    })();
    let received = 0;
    let bad = 0;
    let receivedSum = 0;
    const receiving = (async () => {
      for await (const m of consumer.messages()) {
        if (!isMessage(received, m.data)) bad++;
        receivedSum = addSum(receivedSum, m.data);
        if (++received === MESSAGES) break;
      }
    })();
    const sentSum = await sending;
    await Promise.race([receiving, sleep(120_000).then(() => Promise.reject(new Error(`only ${received} of ${MESSAGES} messages from the guest in 120 s${context()}`)))]);
    const channelMs = performance.now() - t0;
    Atomics.store(words, WORDS.hostStep, 6);
    consumer.close();
    producer.close();

    // Leaves: device.mjs closes (lease released), hold.mjs killed (lease expires), VM off.
    await seen('peer-left', 1, 'the host to see device.mjs close');
    await seen('peer-joined', 2, 'hold.mjs (to be killed) to join');
    const killWait = performance.now();
    await seen('peer-left', 2, 'the host to see hold.mjs killed');
    const killSeenMs = performance.now() - killWait;
    writeFileSync(join(g.shareDir, 'host-saw-kill'), '');
    await seen('peer-joined', 3, 'hold.mjs (running at poweroff) to join');
    writeFileSync(join(g.shareDir, 'host-saw-join'), '');
    await seen('peer-left', 3, 'the host to see the VM power off');

    const result = await guest.result();
    const report = JSON.parse(guest.file('device.json')) as DeviceReport;
    const ctx = context();
    expect(report.error, ctx).toBeUndefined();
    expect(result.status, ctx).toBe(0);

    // The device as the guest saw it.
    expect(report.open).toMatchObject({ id: guestId, vectors: 2, interrupts: 'vfio', size: 4 << 20, info: { revision: 1 } });
    expect(report.open!.info.iommuGroup).toEqual(expect.any(Number));
    expect(report.ivposition).toBe(guestId);
    expect(report.peers).toEqual([{ id: host.id, vectors: 2 }]);
    expect(report.hostMarker).toBe(HOST_MARKER);
    expect(report.ringsReceived).toEqual([1, 1]);
    expect(report.pongs).toBe(PINGS);

    // B: host -> guest suppression, counted on the host and in the guest (ours and its kernel's).
    expect(hostB.rings).toBe(RINGS);
    expect(hostB.suppressed).toBeGreaterThanOrEqual(RINGS * 0.99);
    expect(hostB.signals).toBe(RINGS - hostB.suppressed);
    expect(hostB.eventfdWrites).toBe(hostB.signals);
    const gB = report.hostToGuest!;
    expect(gB.counters.interrupts).toBeGreaterThanOrEqual(1);
    expect(gB.counters.interrupts).toBeLessThanOrEqual(hostB.signals);
    const vector0 = (list: { name: string; total: number }[]): number => list.find((l) => /vfio-msix\[0\]/.test(l.name))?.total ?? Number.NaN;
    const kernelB = vector0(gB.kernelAfter) - vector0(gB.kernelBefore);
    expect(kernelB, JSON.stringify(gB)).toBeGreaterThanOrEqual(gB.counters.interrupts);
    expect(kernelB).toBeLessThanOrEqual(hostB.signals);

    // C: guest -> host suppression; every edge one Doorbell write, no other.
    const gC = report.guestToHost!;
    expect(gC.counters.rings).toBe(RINGS);
    expect(gC.counters.suppressed).toBeGreaterThanOrEqual(RINGS * 0.99);
    expect(gC.counters.signals).toBe(gC.rang);
    expect(gC.counters.doorbellWrites).toBe(gC.rang);
    expect(gC.counters.eventfdWrites).toBe(0);
    expect(hostC.interrupts).toBeGreaterThanOrEqual(1);
    expect(hostC.interrupts).toBeLessThanOrEqual(gC.rang);

    // QEMU's own count of Doorbell writes (BAR0 offset 0xc) equals the guest's, over the whole run.
    const traced = readFileSync(traceFile, 'utf8').split('\n').filter((l) => l.includes('ivshmem-mmio'));
    // QEMU 7.2 under TCG traces the guest-physical address: BAR0 + 0xc.
    const doorbellLines = traced.filter((l) => Number.parseInt(/addr 0x([0-9a-f]+)/.exec(l)?.[1] ?? 'x', 16) % 256 === 0x0c).length;
    expect(doorbellLines, `${traced.length} ivshmem-mmio lines, e.g. ${traced.slice(0, 3).join(' | ')}`).toBe(report.countersAtEnd!.doorbellWrites);

    // D: channels.
    expect(received).toBe(MESSAGES);
    expect(bad).toBe(0);
    expect(report.h2gResult).toMatchObject({ received: MESSAGES, bad: 0, sum: sentSum });
    expect(report.g2hResult!.sum).toBe(receivedSum);

    // Close: the device unbinds what it bound.
    expect(report.closed).toBe(true);
    expect(report.driverAfterClose).toBe('(null)');

    // Leaves, as the server saw them: released, expired, disconnected (the VM off).
    const leaves = serverEvents.log.filter((r) => r.event === 'peer-left').map((r) => r.args[1]);
    expect(leaves).toEqual(['lease-released', 'lease-expired', 'disconnected']);
    expect(hostEvents.log.filter((r) => r.event === 'peer-left').map((r) => r.args[0])).toEqual([guestId, guestId, guestId]);

    console.log(
      `guest device: boot ${Math.round(result.bootMs)} ms, run ${Math.round(result.totalMs)} ms; ` +
        `round trip host ring -> GuestDevice 'interrupt' -> ring() -> host 'interrupt', ${PINGS} pings: p50 ${p(0.5)} ms, p99 ${p(0.99)} ms, min ${rtt[0]!.toFixed(3)} ms; ` +
        `host->guest ${RINGS} rings, guest busy: ${pct(hostB.suppressed, RINGS)} suppressed, ${hostB.eventfdWrites} eventfd writes, ${gB.counters.interrupts} guest interrupts (kernel ${kernelB}); ` +
        `guest->host ${RINGS} rings, host busy: ${pct(gC.counters.suppressed, RINGS)} suppressed, ${gC.counters.doorbellWrites} Doorbell writes (QEMU traced ${doorbellLines} in all), ${hostC.interrupts} host interrupts; ` +
        `channels ${MESSAGES} each way in ${Math.round(channelMs)} ms (guest: h2g ${Math.round(report.h2gResult!.ms)} ms, g2h ${Math.round(report.g2hResult!.ms)} ms); ` +
        `killed program seen gone after ${Math.round(killSeenMs)} ms`,
    );
  }, 175_000);
});
