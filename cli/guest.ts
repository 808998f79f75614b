/**
 * `ivshmem guest`: the commands for inside a VM, over its ivshmem PCI devices (1af4:1110).
 *
 * - `guest list`: the devices, one line each (or one JSON array).
 * - `guest info [ADDRESS]`: everything sysfs says of one device, and whether vfio-pci is loaded.
 * - `guest peer`: the interactive session of `ivshmem peer` (cli/session.ts: the same stdin
 *   commands, the same JSON events) over a GuestDevice, so that one script drives either side.
 */
import { type Command, InvalidArgumentError, Option } from 'commander';
import { isDeviceError } from '../lib/core/errors.js';
import type { PeerVectors } from '../lib/endpoint/endpoint.js';
import { describeDevice, onlyDevice, vfioPciLoaded, type BarInfo, type GuestDeviceInfo } from '../lib/guest/discovery.js';
import { GuestDevice } from '../lib/guest/guest-device.js';
import { MAX_PEER_ID } from '../lib/protocol/wire.js';
import { CliError, integerArg, messageOf, printLine, subcommand } from './common.js';
import { COMMANDS_HELP, plural, runSession } from './session.js';

/** The most MSI-X vectors GuestDevice wires (a PCI MSI-X table's limit). */
const MAX_MSIX_VECTORS = 2048;
const MAX_PEER_VECTORS = 0xffff;

interface ListFlags {
  json?: boolean;
}

interface GuestPeerFlags {
  json?: boolean;
  device?: string;
  interrupts: 'vfio' | 'none';
  vectors?: number;
  bitmask?: boolean;
  peer?: (number | PeerVectors)[];
}

export function addGuestCommand(program: Command): Command {
  const guest = subcommand(program, 'guest').description(
    "inside a VM: list the ivshmem PCI devices, describe one, or be a peer over one (as 'ivshmem peer' is on the host)",
  );
  addListCommand(guest);
  addInfoCommand(guest);
  addGuestPeerCommand(guest);
  return guest;
}

function addListCommand(guest: Command): Command {
  return subcommand(guest, 'list')
    .description('list the ivshmem devices (1af4:1110) of this system, one line each')
    .addOption(new Option('--json', 'print one JSON array of the devices'))
    .addHelpText(
      'after',
      `
Text output, one line per device:
  0000:00:02.0  rev 1  BAR2 4194304 bytes  2 MSI-X vectors  driver vfio-pci  IOMMU group 3
("no driver", "no IOMMU group", "MSI-X unknown (not root)" where sysfs does not say);
"no ivshmem devices (1af4:1110)" when there are none (status 0 all the same).

JSON output (--json): [{"address":"0000:00:02.0","revision":1,"bar0":{"start":...,"size":256},
"bar2":{"start":...,"size":4194304},"msixVectors":2,"driver":"vfio-pci","driverOverride":null,
"iommuGroup":3}]`,
    )
    .action((flags: ListFlags) => {
      const devices = GuestDevice.list();
      if (flags.json === true) {
        printLine(JSON.stringify(devices));
        return;
      }
      if (devices.length === 0) {
        printLine('no ivshmem devices (1af4:1110)');
        return;
      }
      for (const d of devices) printLine(listLine(d));
    });
}

function listLine(d: GuestDeviceInfo): string {
  return [
    d.address,
    `rev ${revisionText(d.revision)}`,
    `BAR2 ${d.bar2.size} bytes`,
    d.msixVectors === null ? 'MSI-X unknown (not root)' : plural(d.msixVectors, 'MSI-X vector'),
    d.driver === null ? 'no driver' : `driver ${d.driver}`,
    d.iommuGroup === null ? 'no IOMMU group' : `IOMMU group ${d.iommuGroup}`,
  ].join('  ');
}

function addInfoCommand(guest: Command): Command {
  return subcommand(guest, 'info')
    .description('describe one ivshmem device (default: the only one) and whether vfio-pci is loaded')
    .argument('[address]', 'PCI address, DDDD:BB:DD.F or BB:DD.F (e.g. 00:02.0)')
    .addOption(new Option('--json', 'print one JSON object: the device and "vfioPciLoaded"'))
    .addHelpText(
      'after',
      `
Text output, one field per line:
  address: 0000:00:02.0
  revision: 1
  BAR0: 256 bytes at 0xfebf1000
  BAR2: 4194304 bytes at 0xfe000000
  MSI-X vectors: 2                  ("unknown (not root)" where config space is not readable)
  driver: vfio-pci                  ("none" for no driver)
  driver_override: none
  IOMMU group: 3                    ("none" without an IOMMU: VFIO cannot take the device)
  vfio-pci loaded: yes

JSON output (--json): the fields of 'ivshmem guest list --json' and "vfioPciLoaded":true.
Without ADDRESS and with several devices it fails listing their addresses.`,
    )
    .action((address: string | undefined, flags: ListFlags) => {
      let info: GuestDeviceInfo;
      try {
        info = address === undefined ? onlyDevice() : describeDevice(address);
      } catch (error) {
        throw new CliError(messageOf(error));
      }
      const loaded = vfioPciLoaded();
      if (flags.json === true) {
        printLine(JSON.stringify({ ...info, vfioPciLoaded: loaded }));
        return;
      }
      printLine(`address: ${info.address}`);
      printLine(`revision: ${revisionText(info.revision)}`);
      printLine(`BAR0: ${barText(info.bar0)}`);
      printLine(`BAR2: ${barText(info.bar2)}`);
      printLine(`MSI-X vectors: ${info.msixVectors ?? 'unknown (not root)'}`);
      printLine(`driver: ${info.driver ?? 'none'}`);
      printLine(`driver_override: ${info.driverOverride ?? 'none'}`);
      printLine(`IOMMU group: ${info.iommuGroup ?? 'none'}`);
      printLine(`vfio-pci loaded: ${loaded ? 'yes' : 'no'}`);
    });
}

function revisionText(revision: number): string {
  return Number.isInteger(revision) ? String(revision) : 'unknown';
}

function barText(bar: BarInfo): string {
  return bar.size === 0 ? 'not assigned' : `${bar.size} bytes at 0x${bar.start.toString(16)}`;
}

/** `--peer ID[:VECTORS]`, repeatable: an ID alone gets GuestDevice's default (the own vector count). */
function peerArg(value: string, previous: (number | PeerVectors)[] | undefined): (number | PeerVectors)[] {
  const m = /^(\d+)(?::(\d+))?$/.exec(value);
  const id = Number(m?.[1]);
  const vectors = m?.[2] === undefined ? undefined : Number(m[2]);
  if (m === null || id > MAX_PEER_ID || (vectors !== undefined && (vectors < 1 || vectors > MAX_PEER_VECTORS))) {
    throw new InvalidArgumentError(
      `Expected ID or ID:VECTORS (ID 0 to ${MAX_PEER_ID}, VECTORS 1 to ${MAX_PEER_VECTORS}), e.g. 1 or 1:2.`,
    );
  }
  return [...(previous ?? []), vectors === undefined ? id : { id, vectors }];
}

function addGuestPeerCommand(guest: Command): Command {
  return subcommand(guest, 'peer')
    .description("be a peer over this VM's ivshmem device: ring, read and write from stdin commands (as 'ivshmem peer')")
    .addOption(new Option('--json', 'print every event and result as one JSON object per line'))
    .addOption(new Option('--device <address>', 'PCI address of the ivshmem device (default: the only one)'))
    .addOption(
      new Option('--interrupts <mode>', 'vfio: MSI-X interrupts through vfio-pci; none: memory and rings only, no interrupts')
        .choices(['vfio', 'none'])
        .default('vfio'),
    )
    .addOption(
      new Option('--vectors <n>', "own MSI-X vectors to wire (default: all of the device's)").argParser(
        integerArg(1, MAX_MSIX_VECTORS),
      ),
    )
    .addOption(new Option('--bitmask', 'require the bitmask header: the peers are its live bits'))
    .addOption(
      new Option('--peer <id[:vectors]>', 'without --bitmask: a peer to ring (repeatable; VECTORS default: the own count)')
        .argParser(peerArg)
        .conflicts('bitmask'),
    )
    .addHelpText(
      'after',
      `
Opens the ivshmem-doorbell PCI device from userspace: BAR2 is the shared memory, the Doorbell
register rings a peer, and with --interrupts vfio (the default) its MSI-X vectors are the own
interrupts. It binds the device to vfio-pci itself when the vfio-pci module is loaded and no
driver holds the device, and unbinds it on exit; VFIO needs root and an IOMMU (QEMU -machine q35
-device intel-iommu,intremap=on, guest kernel intel_iommu=on). --interrupts none needs neither
VFIO nor an IOMMU (root still, for sysfs): ring, read and write work, interrupts never come.

The device keeps no list of peers: with --bitmask they are the header's live bits (looked at
every 100 ms); without it, the ones named by --peer.

${COMMANDS_HELP}

Text output: "connected: id 3, 2 vectors, 4194304 bytes shared", "peers: 0(2) 1(2)",
"interrupt on vector 1", "peer 4 joined", "peer 4 left", hex dump lines
("00000040  de ad be ef ..."), "error: ...", and for dump a table:
     ID  VECTORS
      3        2  (us)
      0        2
On a terminal (without --json) it prompts "cmd> ", with line editing and history.

JSON output (--json), one object per line, the same as 'ivshmem peer' prints (no server-lost:
there is no server socket in a guest):
  {"event":"connected","id":3,"vectors":2,"size":4194304,"peers":[{"id":0,"vectors":2}]}
  {"event":"interrupt","vector":1,"count":1}    {"event":"peer-joined","id":4}
  {"event":"peer-left","id":4}
  {"event":"rang","peer":4,"vector":0}    {"event":"peers","peers":[...]}
  {"event":"dump","id":3,"vectors":2,"peers":[{"id":0,"vectors":2}]}
  {"event":"read","offset":64,"hex":"deadbeef"}    {"event":"written","offset":64,"length":4}
  {"event":"error","message":"..."}

An invalid command is reported and the peer keeps running. quit, end of input, SIGINT and
SIGTERM close the device and leave with status 0; a device that cannot be opened exits with 1
and says what is missing (with --json, as an error event first).`,
    )
    .action((flags: GuestPeerFlags) => runGuestPeer(flags));
}

async function runGuestPeer(flags: GuestPeerFlags): Promise<void> {
  const vfio = flags.interrupts === 'vfio';
  await runSession({
    json: flags.json === true,
    open: () =>
      GuestDevice.open({
        interrupts: flags.interrupts,
        bind: vfio,
        ...(flags.device === undefined ? {} : { address: flags.device }),
        ...(flags.vectors === undefined ? {} : { vectors: flags.vectors }),
        ...(flags.bitmask === true ? { bitmask: true } : {}),
        ...(flags.peer === undefined ? {} : { peers: flags.peer }),
      }),
    // A DeviceError says what is missing and for which device; other errors get the device named.
    failure: (error) =>
      isDeviceError(error) ? error.message : `cannot open ${flags.device ?? 'the ivshmem device'}: ${messageOf(error)}`,
  });
}
