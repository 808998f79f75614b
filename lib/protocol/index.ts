/**
 * `ivshmem/protocol`: the formats as pure code, no I/O — the ivshmem-server wire protocol
 * (docs/protocol.md), the bitmask header (docs/header.md), the channel layout
 * (docs/channel.md) and the ivshmem PCI device's registers.
 */
export * from './wire.js';
export { HEADER_MAGIC, HEADER_VERSION, HeaderField, headerLayout, readHeader, writeHeader, LeaseWords, type HeaderLayout } from './header.js';
export {
  CHANNEL_MAGIC,
  CHANNEL_VERSION,
  CHANNEL_HEADER_BYTES,
  RECORD_ALIGN,
  PAD,
  Word,
  recordSize,
  readChannelHeader,
  type ChannelInfo,
} from './channel-layout.js';
export { IVSHMEM_VENDOR_ID, IVSHMEM_DEVICE_ID, Bar0, BAR0_SIZE, doorbellValue, msixVectorsOf, type Bar0Register } from './pci.js';
export { inspectRegion, DEFAULT_SCAN_LIMIT, type RegionSnapshot, type HeaderSnapshot, type ChannelSnapshot } from './inspect.js';
