/**
 * The guest harness (test/helpers/guest.ts), in one boot (each costs ~7-10 s under TCG): the
 * guest runs this checkout's node and dist/, sees the ivshmem-doorbell device served by our
 * PeerServer with BARs of the right sizes, loads the VFIO modules and gives the device an
 * IOMMU group that vfio-pci can take, and what it writes to /results reaches the test.
 *
 * Without QEMU or apt-get the file skips with a message; in CI it fails instead.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { killAllChildren } from '../helpers/children.js';
import { bootGuest, type Guest, GUEST_RESULTS, guestAssets, guestUnavailable } from '../helpers/guest.js';
import { requireBuilt } from '../helpers/paths.js';
import { Resources } from '../helpers/resources.js';

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
basename "$(readlink $dev/iommu_group)" > $R/iommu-group
cut -d' ' -f1 /proc/modules | grep vfio | sort > $R/modules
echo vfio-pci > $dev/driver_override
[ -e $dev/driver ] && echo "\${dev##*/}" > $dev/driver/unbind
echo "\${dev##*/}" > /sys/bus/pci/drivers_probe
basename "$(readlink $dev/driver)" > $R/driver
ls /dev/vfio > $R/dev-vfio
echo guest done
`;

describe.skipIf(why !== null)('a QEMU guest (test/helpers/guest.ts)', () => {
  beforeAll(async () => {
    await guestAssets(); // cached after the first run; the first fetch downloads ~70 MB
  }, 10 * 60_000);

  afterAll(() => killAllChildren());

  it('runs this checkout in the guest, with the ivshmem-doorbell device, VFIO and the results share', async () => {
    const server = res.listen('guest', { vectors: VECTORS, size: SIZE });
    guest = await bootGuest({ ivshmemSocket: server.socketPath, vectors: VECTORS, vfio: true, script: SCRIPT, timeoutMs: 90_000 });
    await guest.waitForLine('IVSHMEM-GUEST-START');
    const result = await guest.result();
    const context = guest.output;
    expect(result.status, context).toBe(0);
    expect(guest.lines, context).toContain('guest done');

    // This checkout's node and dist/, its native addon working.
    expect(guest.file('node-version')).toBe(process.version);
    expect(guest.file('import'), guest.file('import.err')).toBe('function function eventfd 2');

    // The device, its BARs: 256 bytes of registers, the server's shared memory.
    expect(guest.file('address').trim()).toMatch(/^0000:00:[0-9a-f]{2}\.0$/);
    const sizes = barSizes(guest.file('resource'));
    expect(sizes[0]).toBe(256);
    expect(sizes[2]).toBe(server.size);
    expect(server.size).toBe(SIZE);

    // VFIO: the modules, an IOMMU group, vfio-pci bound and the group's device node.
    const group = guest.file('iommu-group').trim();
    expect(group).toMatch(/^\d+$/);
    expect(guest.file('modules').trim().split('\n')).toEqual(expect.arrayContaining(['vfio', 'vfio_iommu_type1', 'vfio_pci', 'vfio_pci_core']));
    expect(guest.file('driver').trim()).toBe('vfio-pci');
    expect(guest.file('dev-vfio').trim().split(/\s+/)).toEqual(expect.arrayContaining(['vfio', group]));

    expect(guest.files()).toEqual(expect.arrayContaining(['node-version', 'import', 'resource']));
    console.log(`guest: QEMU start → script ${Math.round(result.bootMs)} ms, → exit marker ${Math.round(result.totalMs)} ms`);
  }, 120_000);
});
