/**
 * QEMU's ivshmem PCI device as a guest sees it: its IDs and the BAR0 registers of revision 1
 * (QEMU's docs/specs/ivshmem-spec.rst). Pure: the guest device and the device models both use it.
 */
/** Red Hat / Qumranet's vendor ID, and the ivshmem device's. */
export const IVSHMEM_VENDOR_ID = 0x1af4;
export const IVSHMEM_DEVICE_ID = 0x1110;

/** BAR0 register offsets, all 32-bit. */
export const Bar0 = {
  /** Interrupt mask (INTx only; ivshmem-doorbell uses MSI-X, so a latch without effect). */
  IntrMask: 0x00,
  /** Interrupt status (INTx only): a read returns it and clears it. */
  IntrStatus: 0x04,
  /** Own peer ID, read-only. */
  IVPosition: 0x08,
  /** Write `dest << 16 | vector` to interrupt peer `dest` on `vector`. Write-only. */
  Doorbell: 0x0c,
} as const;
export type Bar0Register = keyof typeof Bar0;

/** BAR0 is 256 bytes; BAR2 is the shared memory, BAR1 the MSI-X table. */
export const BAR0_SIZE = 256;

/** The Doorbell value that rings `dest` on `vector` (both 16-bit). */
export function doorbellValue(dest: number, vector: number): number {
  return ((dest << 16) | vector) >>> 0;
}

/** PCI config space: where the capability list starts, and the MSI-X capability's ID. */
const PCI_STATUS = 0x06;
const PCI_STATUS_CAP_LIST = 0x10;
const PCI_CAPABILITY_LIST = 0x34;
const PCI_CAP_ID_MSIX = 0x11;

/**
 * MSI-X vectors a device has, from its config space bytes (its MSI-X capability's table size),
 * or null if the bytes do not reach it (an unprivileged read of sysfs `config` stops at 64).
 * 0 if the device has no MSI-X capability.
 */
export function msixVectorsOf(config: Uint8Array): number | null {
  if (config.length < 0x40) return null;
  if ((config[PCI_STATUS]! & PCI_STATUS_CAP_LIST) === 0) return 0;
  let at = config[PCI_CAPABILITY_LIST]! & 0xfc;
  // A malformed list could loop: at most 48 capabilities fit in 256 bytes.
  for (let i = 0; at !== 0 && i < 48; i++) {
    if (at + 4 > config.length) return null;
    if (config[at] === PCI_CAP_ID_MSIX) return ((config[at + 2]! | (config[at + 3]! << 8)) & 0x7ff) + 1;
    at = config[at + 1]! & 0xfc;
  }
  return 0;
}
