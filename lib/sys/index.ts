/**
 * `ivshmem/sys`: the operating-system building blocks under the network — shared memory,
 * eventfds, fd readiness, UNIX sockets with fd passing, a PCI device through VFIO (inside a VM). Errors are in the root entry.
 */
export {
  SharedMemory,
  normalizeShmName,
  type CreateOptions,
  type FromFdOptions,
  type Seals,
  type MemoryView,
} from './shared-memory.js';
export { EventFd } from './eventfd.js';
export { FdWatcher, type FdWatcherEvents } from './watcher.js';
export { UnixSocket, type Received, type ListenOptions } from './unix-socket.js';
export { closeFd } from './fd.js';
export { VfioDevice, type VfioRegionInfo } from './vfio-device.js';
export { PciRegisters, type DeviceRegisters } from './registers.js';
export { LeaseKeeper } from './lease.js';
export type { InterruptCounters } from './interrupt-table.js';
