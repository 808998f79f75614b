/**
 * `ivshmem guest peer --json` in a real guest, one boot, driven by a script inside the VM
 * (test/fixtures/guest/drive-cli.mjs) the way a script drives `ivshmem peer --json` on the host,
 * against `ivshmem server --bitmask` (a child process) and a host Peer:
 *
 * - it binds the device to vfio-pci itself, says who is live (the bitmask header), writes and
 *   reads the memory, rings the host and takes its interrupts;
 * - the server is SIGKILLed while the guest runs: host and guest still ring each other;
 * - quit leaves the device as it found it (unbound); then GuestDevice's typed errors: not bound,
 *   busy (the CLI holds the VFIO group), bound to vfio-pci for the sysfs path, no permission;
 * - the README's guest example (examples/guest.mjs) runs as written.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Peer } from '../../lib/index.js';
import { ivshmem } from '../fixtures/cli/child.js';
import { killAllChildren } from '../helpers/children.js';
import { bootGuest, type Guest, GUEST_RESULTS, guestAssets, guestUnavailable } from '../helpers/guest.js';
import { requireBuilt, Scratch } from '../helpers/paths.js';
import { EventRecorder, waitFor } from '../helpers/wait.js';

const why = guestUnavailable();
if (why !== null) console.warn(why);

const scratch = new Scratch();
let guest: Guest | undefined;
let host: Peer | undefined;

afterEach(async () => {
  host?.close();
  host = undefined;
  await guest?.close();
  guest = undefined;
  await killAllChildren();
  scratch.cleanup();
});

interface Failure {
  name?: string;
  reason?: string;
  code?: string;
  message?: string;
}

interface DriveReport {
  events: ({ event: string } & Record<string, unknown>)[];
  t?: [string, number][];
  busy?: Failure;
  exit?: { code: number | null; signal: string | null } | 'timeout';
  stderr?: string;
  notBound?: Failure;
  boundNone?: Failure;
  permission?: Failure;
  permissionBind?: Failure;
  error?: unknown;
}

describe.skipIf(why !== null)('ivshmem guest peer --json in a QEMU guest', () => {
  beforeAll(async () => {
    await guestAssets();
  }, 10 * 60_000);

  afterAll(() => killAllChildren());

  it('is driven by a script like ivshmem peer, survives the server being killed, and leaves the device as it found it', async () => {
    const socket = scratch.socket();
    const server = ivshmem(['server', '-S', socket, '--bitmask', '-n', '2', '-l', '1M'], 'server');
    expect(await server.stdout.take()).toBe(`listening on ${socket}`);
    host = await Peer.connect(socket, { bitmask: true, timeout: 10_000 });
    const dataOffset = host.header.dataOffset;
    const params = {
      dist: requireBuilt(),
      hostMarker: 'the host wrote this',
      hostMarkerOffset: dataOffset + 256,
      guestMarker: 'the guest CLI wrote this',
      guestMarkerOffset: dataOffset + 512,
    };
    new TextEncoder().encodeInto(params.hostMarker, host.shm.bytes(params.hostMarkerOffset, 64));
    const events = new EventRecorder(host, ['peer-joined', 'interrupt', 'server-lost']);
    const script = `
R=${GUEST_RESULTS}
for d in /sys/bus/pci/devices/*; do
  [ "$(cat $d/vendor)" = 0x1af4 ] && [ "$(cat $d/device)" = 0x1110 ] && echo "\${d##*/}" > $R/address
done
cat > $R/params.json <<'PARAMS_END'
${JSON.stringify(params)}
PARAMS_END
node test/fixtures/guest/drive-cli.mjs $R > $R/drive.out 2> $R/drive.err
echo "drive-cli.mjs exit $?"
node examples/guest.mjs > $R/example.out 2> $R/example.err
echo "examples/guest.mjs exit $?"
`;
    guest = await bootGuest({ ivshmemSocket: socket, vectors: 2, vfio: true, script, timeoutMs: 120_000 });
    const g = guest;
    const context = (): string => `${g.diagnostics()}\nserver: ${server.diagnostics()}`;
    const fromGuest = (): number => events.all('interrupt').filter(([v]) => v === 1).reduce((n, [, c]) => n + (c as number), 0);

    await waitFor(() => events.all('peer-joined').length > 0, () => `the guest (QEMU) to join${context()}`, 60_000);
    const guestId = events.all('peer-joined')[0]![0] as number;
    await waitFor(() => fromGuest() >= 1, () => `the guest CLI's ring on vector 1${context()}`, 60_000);
    host.ring(guestId, 0);
    await waitFor(() => g.files().includes('stage1'), () => `the guest to finish its first stage${context()}`, 60_000);

    // SIGKILL: no goodbye to anyone. The host Peer loses the server; nobody loses the other.
    await server.kill('SIGKILL');
    await waitFor(() => events.all('server-lost').length > 0, () => `the host Peer to lose the server${context()}`);
    writeFileSync(join(g.shareDir, 'server-killed'), '');
    await waitFor(() => fromGuest() >= 2, () => `the guest CLI's ring after the server died${context()}`, 60_000);
    host.ring(guestId, 0);

    const result = await guest.result();
    const report = JSON.parse(guest.file('drive.json')) as DriveReport;
    const ctx = `${JSON.stringify(report)}\n${guest.file('drive.err')}${context()}`;
    expect(report.error, ctx).toBeUndefined();
    expect(result.status, ctx).toBe(0);

    // The same JSON events as ivshmem peer.
    const [connected, ...rest] = report.events.map(({ taken: _, ...e }) => e);
    expect(connected).toEqual({ event: 'connected', id: guestId, vectors: 2, size: 1 << 20, peers: [{ id: host.id, vectors: 2 }] });
    expect(rest).toEqual([
      { event: 'written', offset: params.guestMarkerOffset, length: params.guestMarker.length },
      { event: 'read', offset: params.hostMarkerOffset, hex: Buffer.from(params.hostMarker).toString('hex') },
      { event: 'rang', peer: host.id, vector: 1 },
      { event: 'interrupt', vector: 0, count: 1 },
      { event: 'error', message: expect.stringContaining('peer 999') },
      { event: 'rang', peer: host.id, vector: 1 },
      { event: 'interrupt', vector: 0, count: 1 },
      { event: 'peers', peers: [{ id: host.id, vectors: 2 }] },
      { event: 'help', commands: expect.arrayContaining([expect.stringContaining('ring PEER')]) },
    ]);
    expect(report.exit).toEqual({ code: 0, signal: null });
    expect(new TextDecoder().decode(host.shm.bytes(params.guestMarkerOffset, params.guestMarker.length))).toBe(params.guestMarker);
    expect(fromGuest()).toBe(2);

    // Typed errors, each with the reason a program branches on.
    expect(report.busy).toMatchObject({ name: 'DeviceError', reason: 'busy' });
    expect(report.notBound).toMatchObject({ name: 'DeviceError', reason: 'not-bound', message: expect.stringContaining('bind: true') });
    expect(report.boundNone).toMatchObject({ name: 'DeviceError', reason: 'bound-elsewhere', message: expect.stringContaining('vfio-pci') });
    expect(report.permission).toMatchObject({ name: 'DeviceError', reason: 'permission' });
    expect(report.permissionBind).toMatchObject({ name: 'DeviceError', reason: 'permission' });
    // The README's example: one bitmask ring of the host, an edge (nobody set the host's bit yet).
    expect(guest.file('example.out'), guest.file('example.err')).toBe(`peer ${guestId} rang peer ${host.id}: one Doorbell write\n`);
    await waitFor(() => events.all('interrupt').some(([v]) => v === 0), () => `the example's ring on vector 0${context()}`);
    console.log(`guest cli: boot ${Math.round(result.bootMs)} ms, run ${Math.round(result.totalMs)} ms; in the guest: ${JSON.stringify(report.t)}`);
  }, 150_000);
});
