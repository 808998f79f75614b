/**
 * VfioDevice inside a real guest, in one boot: the guest binds QEMU's ivshmem-doorbell device to
 * vfio-pci and opens it with lib/sys's VfioDevice; the host is a PeerServer and a Peer.
 *
 * - BAR0: IVPosition reads the ID the server gave the guest (the host saw it join).
 * - BAR2: a marker the guest writes is what the host Peer reads in `peer.shm`.
 * - Doorbell (guest → host): `hostId << 16 | 1` reaches the host Peer as an interrupt on vector 1.
 * - MSI-X (host → guest): the host Peer ringing the guest's ID on vector 0 signals the guest's
 *   EventFd; the guest answers each with a doorbell, PINGS times: the round trip is timed.
 *
 * Host and guest coordinate through marker words at COORD in the shared memory; every wait has a
 * deadline. Without QEMU or apt-get the file skips with a message; in CI it fails instead.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Peer } from '../../lib/index.js';
import { killAllChildren } from '../helpers/children.js';
import { bootGuest, type Guest, GUEST_RESULTS, guestAssets, guestUnavailable } from '../helpers/guest.js';
import { requireBuilt } from '../helpers/paths.js';
import { Resources } from '../helpers/resources.js';
import { next, within } from '../helpers/wait.js';

const why = guestUnavailable();
if (why !== null) console.warn(why);

const VECTORS = 2;
const SIZE = 1024 * 1024;
const PINGS = 200;
/** Byte offset of the coordination words (clear of anything at the start of the memory). */
const COORD = 4096;
/** Words at COORD (uint32): */
const W_HOST_MAGIC = 0; // HOST_MAGIC once W_HOST_ID is written
const W_HOST_ID = 1;
const W_IVPOSITION = 2; // what the guest read from IVPosition
const W_GUEST_READY = 3; // GUEST_READY once the guest's MSI-X eventfds are wired
const W_GUEST_PINGS = 4; // interrupts the guest counted on vector 0
const HOST_MAGIC = 0x484f5354;
const GUEST_READY = 0x56464952;
const MARKER = 'written by the guest through VFIO BAR2';
const MARKER_OFFSET = COORD + 64;

const GUEST_JS = `
import { readFileSync, writeFileSync } from 'node:fs';
const sys = await import(${JSON.stringify(requireBuilt('dist/lib/sys/index.js'))});
const R = ${JSON.stringify(GUEST_RESULTS)};
const out = {};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
try {
  const dev = sys.VfioDevice.open(readFileSync(R + '/address', 'utf8').trim());
  out.info = { bar0: dev.bar0, bar2: dev.bar2, config: dev.config, msixVectors: dev.msixVectors, group: dev.groupPath };
  const words = new Uint32Array(dev.memory.buffer, ${COORD}, 16);
  const deadline = Date.now() + 20000;
  while (words[${W_HOST_MAGIC}] !== ${HOST_MAGIC}) {
    if (Date.now() > deadline) throw new Error('the host never wrote its ID');
    await sleep(5);
  }
  const hostId = words[${W_HOST_ID}];
  out.ivposition = dev.registers.read32(8);
  out.bounds = [() => dev.registers.read32(2), () => dev.registers.read32(256), () => dev.registers.write32(256, 0), () => dev.configRead(3, 2)].map((f) => {
    try { f(); return 'no error'; } catch (e) { return e.name; }
  });
  words[${W_IVPOSITION}] = out.ivposition;
  new TextEncoder().encodeInto(${JSON.stringify(MARKER)}, dev.memory.bytes(${MARKER_OFFSET}, 64));
  const [v0] = dev.enableInterrupts(${VECTORS});
  out.busMaster = (dev.configRead(4, 2) & 4) !== 0;
  words[${W_GUEST_READY}] = ${GUEST_READY};
  const ring = () => dev.registers.write32(12, ((hostId << 16) | 1) >>> 0);
  ring();
  let got = 0;
  let events = 0;
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('only ' + got + ' MSI-X interrupts on vector 0 in 90 s')), 90000);
    v0.watch((count) => {
      got += count;
      events += 1;
      words[${W_GUEST_PINGS}] = got;
      ring();
      if (got >= ${PINGS}) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  out.got = got;
  out.events = events;
  out.procInterrupts = readFileSync('/proc/interrupts', 'utf8').split('\\n').filter((l) => l.includes('vfio')).map((l) => l.trim().replace(/\\s+/g, ' '));
  const before = dev.memory.buffer;
  dev.close();
  dev.close();
  out.closed = dev.closed && dev.memory.closed;
  out.detached = before.byteLength === 0;
  try { dev.registers.read32(8); } catch (e) { out.afterClose = e.code; }
  // Open, wire interrupts, close, 20 times: no fd, VFIO mapping or native resource left (the heap's own mappings vary).
  const { native } = await import(${JSON.stringify(requireBuilt('dist/lib/sys/binding.js'))});
  const { readdirSync } = await import('node:fs');
  const count = () => ({ fds: readdirSync('/proc/self/fd').length, vfioMaps: readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.includes('vfio')).length, live: native.liveResources() });
  const baseline = count();
  for (let i = 0; i < 20; i++) {
    const d = sys.VfioDevice.open(readFileSync(R + '/address', 'utf8').trim());
    d.enableInterrupts(${VECTORS});
    d.memory.bytes(0, 8);
    if (i === 0) out.leakOpen = count();
    d.close();
  }
  out.leak = { before: baseline, after: count() };
} catch (e) {
  out.error = { message: e.message, code: e.code, syscall: e.syscall, reason: e.reason, stack: e.stack };
  process.exitCode = 1;
}
writeFileSync(R + '/vfio.json', JSON.stringify(out));
`;

const SCRIPT = `
R=${GUEST_RESULTS}
dev=
for d in /sys/bus/pci/devices/*; do
  [ "$(cat $d/vendor)" = 0x1af4 ] && [ "$(cat $d/device)" = 0x1110 ] && dev=$d
done
[ -n "$dev" ] || { echo "no 1af4:1110 device"; exit 10; }
echo "\${dev##*/}" > $R/address
echo vfio-pci > $dev/driver_override
[ -e $dev/driver ] && echo "\${dev##*/}" > $dev/driver/unbind
echo "\${dev##*/}" > /sys/bus/pci/drivers_probe
basename "$(readlink $dev/driver)" > $R/driver
cat > $R/vfio.mjs <<'GUEST_JS_END'
${GUEST_JS}
GUEST_JS_END
node $R/vfio.mjs > $R/vfio.out 2> $R/vfio.err
status=$?
echo "vfio exit $status"
exit $status
`;

interface GuestReport {
  info?: { bar0: { size: number; mappable: boolean }; bar2: { size: number }; config: { size: number }; msixVectors: number; group: string };
  ivposition?: number;
  bounds?: string[];
  busMaster?: boolean;
  got?: number;
  events?: number;
  procInterrupts?: string[];
  closed?: boolean;
  detached?: boolean;
  afterClose?: string;
  leak?: { before: unknown; after: unknown };
  leakOpen?: { vfioMaps: number };
  error?: unknown;
}

const res = new Resources();
let guest: Guest | undefined;

afterEach(async () => {
  await guest?.close();
  guest = undefined;
  await killAllChildren();
  res.closeAll();
});

/** Interrupts of `peer` on `vector`, and a wait for the total to reach n (with a deadline). */
function interruptCounter(peer: Peer, vector: number): { readonly total: number; reach(n: number, timeoutMs: number, what: () => string): Promise<void> } {
  let total = 0;
  let wake: (() => void) | null = null;
  peer.on('interrupt', (v, count) => {
    if (v !== vector) return;
    total += count;
    wake?.();
  });
  return {
    get total() {
      return total;
    },
    async reach(n, timeoutMs, what) {
      const end = performance.now() + timeoutMs;
      while (total < n) {
        await within(new Promise<void>((resolve) => (wake = resolve)), what, Math.max(1, end - performance.now()));
      }
      wake = null;
    },
  };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

describe.skipIf(why !== null)('VfioDevice in a QEMU guest (ivshmem-doorbell bound to vfio-pci)', () => {
  beforeAll(async () => {
    await guestAssets();
  }, 10 * 60_000);

  afterAll(() => killAllChildren());

  it('reads IVPosition, shares BAR2 with a host Peer, rings it through the Doorbell register and takes its MSI-X interrupts on an EventFd', async () => {
    const server = res.listen('vfio', { vectors: VECTORS, size: SIZE });
    const host = await res.connect(server);
    const words = new Uint32Array(host.shm.buffer, COORD, 16);
    words[W_HOST_ID] = host.id;
    words[W_HOST_MAGIC] = HOST_MAGIC;
    const fromGuest = interruptCounter(host, 1);
    const onVector0 = interruptCounter(host, 0);
    const joined = next<[number]>(host, 'peer-joined', 'the guest (QEMU) to join', 60_000);

    guest = await bootGuest({ ivshmemSocket: server.socketPath, vectors: VECTORS, vfio: true, script: SCRIPT, timeoutMs: 100_000 });
    const g = guest;
    const [guestId] = await joined.catch((e: Error) => {
      throw new Error(`${e.message}${g.diagnostics()}`);
    });

    // The guest's first doorbell: it is ready, its IVPosition and marker are in the memory.
    await fromGuest.reach(1, 60_000, () => `the guest's first doorbell on vector 1${g.diagnostics()}`);
    expect(words[W_GUEST_READY]).toBe(GUEST_READY);
    expect(words[W_IVPOSITION]).toBe(guestId);
    const marker = new TextDecoder().decode(host.shm.bytes(MARKER_OFFSET, MARKER.length));
    expect(marker).toBe(MARKER);

    // Host → guest MSI-X on vector 0, answered by a guest doorbell on vector 1: PINGS round trips.
    const rtt: number[] = [];
    for (let i = 1; i <= PINGS; i++) {
      const t0 = performance.now();
      host.ring(guestId, 0);
      await fromGuest.reach(i + 1, 10_000, () => `the guest's answer to ping ${i} (it counted ${words[W_GUEST_PINGS]})${g.diagnostics()}`);
      rtt.push(performance.now() - t0);
    }
    expect(words[W_GUEST_PINGS]).toBe(PINGS);

    const result = await guest.result();
    const report = JSON.parse(guest.file('vfio.json')) as GuestReport;
    const context = `${JSON.stringify(report)}\n${guest.file('vfio.err')}${guest.diagnostics()}`;
    expect(report.error, context).toBeUndefined();
    expect(result.status, context).toBe(0);
    expect(guest.file('driver').trim()).toBe('vfio-pci');
    expect(report.ivposition).toBe(guestId);
    expect(report.busMaster).toBe(true);
    expect(report.bounds).toEqual(['RangeError', 'RangeError', 'RangeError', 'RangeError']);
    expect(report.info).toMatchObject({ bar0: { size: 256 }, bar2: { size: SIZE }, msixVectors: VECTORS });
    expect(report.info!.group).toMatch(/^\/dev\/vfio\/\d+$/);
    // Each ping one eventfd wakeup: nothing lost, nothing coalesced (the host waits for the answer).
    expect(report.got).toBe(PINGS);
    expect(report.events).toBe(PINGS);
    // The guest kernel took them as vfio-msix interrupts.
    expect(report.procInterrupts!.some((l) => l.includes('vfio-msix')), context).toBe(true);
    expect(report).toMatchObject({ closed: true, detached: true, afterClose: 'ERR_IVSHMEM_CLOSED' });
    expect(report.leak!.after).toEqual(report.leak!.before);
    expect(report.leak!.before).toMatchObject({ vfioMaps: 0, live: 0 });
    expect(report.leakOpen!.vfioMaps).toBeGreaterThanOrEqual(2); // BAR0 and BAR2, while open
    expect(fromGuest.total).toBe(PINGS + 1);
    expect(onVector0.total).toBe(0);

    const sorted = [...rtt].sort((a, b) => a - b);
    console.log(
      `vfio guest: host ring → guest EventFd (MSI-X) → guest Doorbell write → host 'interrupt', ${PINGS} round trips under -accel ${guest.args[guest.args.indexOf('-accel') + 1]}: ` +
        `p50 ${percentile(sorted, 50).toFixed(3)} ms, p99 ${percentile(sorted, 99).toFixed(3)} ms, min ${sorted[0]!.toFixed(3)} ms, max ${sorted.at(-1)!.toFixed(3)} ms; BAR0 mmap ${report.info!.bar0.mappable}; ` +
        `boot ${Math.round(result.bootMs)} ms, exit ${Math.round(result.totalMs)} ms`,
    );
  }, 150_000);
});
