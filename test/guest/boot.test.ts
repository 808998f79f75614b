/**
 * The guest harness (test/helpers/guest.ts) and a guest without an IOMMU, in one boot (each
 * costs ~7-10 s under TCG): the guest runs this checkout's node and dist/, sees the
 * ivshmem-doorbell device served by our PeerServer with BARs of the right sizes, and what it
 * writes to /results reaches the test. Without an IOMMU, GuestDevice says so for interrupts
 * 'vfio' (and `ivshmem guest peer` with it), and works through sysfs with interrupts 'none'
 * (test/fixtures/guest/sysfs.mjs): memory both ways, Doorbell rings to the host, registers,
 * typed errors for bad addresses, a foreign device and a missing header; `ivshmem guest
 * list` and `info` describe the device.
 *
 * Without QEMU or apt-get the file skips with a message; in CI it fails instead.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { killAllChildren } from '../helpers/children.js';
import { bootGuest, type Guest, GUEST_RESULTS, guestAssets, guestUnavailable } from '../helpers/guest.js';
import { requireBuilt } from '../helpers/paths.js';
import { Resources } from '../helpers/resources.js';
import { EventRecorder, waitFor } from '../helpers/wait.js';

const why = guestUnavailable();
if (why !== null) console.warn(why);

const VECTORS = 2;
const SIZE = 1024 * 1024;

const res = new Resources();
let guest: Guest | undefined;

afterEach(async () => {
  await guest?.close();
  guest = undefined;
  await killAllChildren();
  res.closeAll();
});

/** A Linux sysfs `resource` file: one `start end flags` line (hex) a region; the size of each, 0 for unused. */
function barSizes(resource: string): number[] {
  return resource
    .trim()
    .split('\n')
    .map((line) => {
      const [start, end] = line.trim().split(/\s+/).map((v) => BigInt(v));
      return end! === 0n && start! === 0n ? 0 : Number(end! - start! + 1n);
    });
}

const MAGIC = 0x53595346;
const PARAMS = {
  magic: MAGIC,
  rings: 5,
  hostMarker: 'written by the host',
  hostMarkerOffset: 4096,
  guestMarker: 'written through sysfs resource2',
  guestMarkerOffset: 8192,
};

const SCRIPT = `
R=${GUEST_RESULTS}
node -e 'process.stdout.write(process.version)' > $R/node-version
node --input-type=module -e "
  const m = await import('${requireBuilt()}');
  const sys = await import('${requireBuilt('dist/lib/sys/index.js')}');
  const e = new sys.EventFd(); e.signal(2); const n = e.drain(); e.close();
  process.stdout.write(typeof m.PeerServer + ' ' + typeof m.Peer + ' eventfd ' + n);
" > $R/import 2> $R/import.err
echo "import exit $?"
dev=
for d in /sys/bus/pci/devices/*; do
  [ "$(cat $d/vendor)" = 0x1af4 ] && [ "$(cat $d/device)" = 0x1110 ] && dev=$d
done
[ -n "$dev" ] || { echo "no 1af4:1110 device"; ls -l /sys/bus/pci/devices; exit 10; }
echo "\${dev##*/}" > $R/address
cat $dev/resource > $R/resource
cat > $R/params.json <<'PARAMS_END'
${JSON.stringify(PARAMS)}
PARAMS_END
node test/fixtures/guest/sysfs.mjs $R > $R/sysfs.out 2> $R/sysfs.err
echo "sysfs.mjs exit $?"
node bin/ivshmem.js guest list --json > $R/list.json 2> $R/list.err
node bin/ivshmem.js guest list > $R/list.txt 2>&1
node bin/ivshmem.js guest info > $R/info.txt 2>&1
node bin/ivshmem.js guest peer --json < /dev/null > $R/peer.out 2> $R/peer.err
echo $? > $R/peer.status
echo guest done
`;

interface Failure {
  name: string;
  code?: string;
  reason?: string;
  message: string;
}

interface SysfsReport {
  list?: { address: string; revision: number; bar0: { size: number }; bar2: { size: number }; msixVectors: number | null; driver: string | null; iommuGroup: number | null }[];
  errors?: Record<string, Failure | 'opened'>;
  open?: { id: number; vectors: number; interrupts: string; size: number; ivposition: number };
  peersBefore?: unknown[];
  peers?: unknown[];
  hostMarker?: string;
  counters?: { doorbellWrites: number; eventfdWrites: number; interrupts: number };
  ringErrors?: string[];
  intrMask?: number;
  intrStatus?: number;
  events?: unknown[];
  peersAfter?: unknown[];
  closed?: boolean;
  afterClose?: Failure | 'opened';
  reopened?: boolean;
  driverAfter?: string | null;
  error?: unknown;
}

describe.skipIf(why !== null)('a QEMU guest (test/helpers/guest.ts)', () => {
  beforeAll(async () => {
    await guestAssets(); // cached after the first run; the first fetch downloads ~70 MB
  }, 10 * 60_000);

  afterAll(() => killAllChildren());

  it('runs this checkout in the guest; without an IOMMU GuestDevice says so, and drives the device through sysfs', async () => {
    const server = res.listen('guest', { vectors: VECTORS, size: SIZE });
    const host = await res.connect(server);
    const w = new Int32Array(host.shm.buffer, 0, 16);
    new TextEncoder().encodeInto(PARAMS.hostMarker, host.shm.bytes(PARAMS.hostMarkerOffset, 64));
    Atomics.store(w, 1, host.id);
    Atomics.store(w, 0, MAGIC);
    const fromGuest = new EventRecorder(host, ['interrupt', 'peer-joined']);
    guest = await bootGuest({ ivshmemSocket: server.socketPath, vectors: VECTORS, script: SCRIPT, timeoutMs: 90_000 });
    await guest.waitForLine('IVSHMEM-GUEST-START');
    const result = await guest.result();
    const context = `${guest.output}\nsysfs.err: ${guest.file('sysfs.err')}`;
    expect(result.status, context).toBe(0);
    expect(guest.lines, context).toContain('guest done');
    const guestId = fromGuest.all('peer-joined')[0]?.[0];

    // This checkout's node and dist/, its native addon working.
    expect(guest.file('node-version')).toBe(process.version);
    expect(guest.file('import'), guest.file('import.err')).toBe('function function eventfd 2');

    // The device, its BARs: 256 bytes of registers, the server's shared memory.
    const address = guest.file('address').trim();
    expect(address).toMatch(/^0000:00:[0-9a-f]{2}\.0$/);
    const sizes = barSizes(guest.file('resource'));
    expect(sizes[0]).toBe(256);
    expect(sizes[2]).toBe(server.size);
    expect(server.size).toBe(SIZE);

    const report = JSON.parse(guest.file('sysfs.json')) as SysfsReport;
    expect(report.error, context).toBeUndefined();
    expect(report.list).toEqual([
      { address, revision: 1, bar0: { start: expect.any(Number), size: 256 }, bar2: { start: expect.any(Number), size: SIZE }, msixVectors: VECTORS, driver: null, driverOverride: null, iommuGroup: null },
    ]);
    // Typed errors, each saying what is missing.
    const errors = report.errors!;
    expect(errors.vfio).toMatchObject({ name: 'DeviceError', code: 'ERR_IVSHMEM_DEVICE', reason: 'no-iommu-group' });
    expect((errors.vfio as Failure).message).toContain('intel-iommu');
    expect(errors.badAddress).toMatchObject({ reason: 'bad-address' });
    expect(errors.noDevice).toMatchObject({ reason: 'bad-address', message: expect.stringContaining('no PCI device 0000:00:1f.7') });
    expect(errors.notIvshmem).toMatchObject({ reason: 'not-ivshmem' });
    expect(errors.noHeader).toMatchObject({ name: 'HeaderError', code: 'ERR_IVSHMEM_HEADER' });

    // The sysfs path: IVPosition, memory both ways, Doorbell rings on vector 1, no interrupts.
    expect(report.open).toEqual({ id: guestId, vectors: VECTORS, interrupts: 'none', size: SIZE, ivposition: guestId });
    expect(report.peersBefore).toEqual([]);
    expect(report.peers).toEqual([{ id: host.id, vectors: VECTORS }]);
    expect(report.hostMarker).toBe(PARAMS.hostMarker);
    expect(new TextDecoder().decode(host.shm.bytes(PARAMS.guestMarkerOffset, PARAMS.guestMarker.length))).toBe(PARAMS.guestMarker);
    await waitFor(
      () => fromGuest.all('interrupt').filter(([v]) => v === 1).reduce((n, [, c]) => n + (c as number), 0) === PARAMS.rings,
      'the guest\'s Doorbell rings on vector 1',
    );
    expect(report.counters).toMatchObject({ doorbellWrites: PARAMS.rings, eventfdWrites: 0, interrupts: 0 });
    expect(report.ringErrors).toEqual(['RangeError', 'RangeError']);
    expect(report.intrMask).toBe(0xffffffff); // a latch (INTx only)
    expect(report.intrStatus).toBe(0);
    expect(report.events).toEqual([['joined', host.id], ['left', host.id]]);
    expect(report.peersAfter).toEqual([]);
    expect(report).toMatchObject({ closed: true, afterClose: { code: 'ERR_IVSHMEM_CLOSED' }, reopened: true, driverAfter: null });

    // The CLI: list and info describe it; guest peer with interrupts says what is missing.
    const list = JSON.parse(guest.file('list.json')) as unknown[];
    expect(list).toEqual(report.list);
    expect(guest.file('list.txt').trim()).toBe(`${address}  rev 1  BAR2 ${SIZE} bytes  ${VECTORS} MSI-X vectors  no driver  no IOMMU group`);
    expect(guest.file('info.txt')).toContain(`address: ${address}`);
    expect(guest.file('info.txt')).toContain('vfio-pci loaded: no');
    expect(guest.file('peer.status').trim()).toBe('1');
    const peerOut = guest.file('peer.out').trim().split('\n');
    expect(peerOut).toHaveLength(1);
    expect(JSON.parse(peerOut[0]!)).toMatchObject({ event: 'error', message: expect.stringContaining('no IOMMU group') });

    console.log(`guest: QEMU start → script ${Math.round(result.bootMs)} ms, → exit marker ${Math.round(result.totalMs)} ms`);
  }, 120_000);
});
