export * from './errors.js';
export { SharedMemory, normalizeShmName, type CreateOptions, type FromFdOptions } from './shared-memory.js';
export { EventFd } from './eventfd.js';
export { FdWatcher, type FdWatcherEvents } from './watcher.js';
export { UnixSocket, MESSAGE_SIZE, type Received, type ListenOptions } from './unix-socket.js';
export { closeFd } from './fd.js';
