export * from './errors.js';
export { SharedMemory, normalizeShmName, type CreateOptions, type FromFdOptions, type Seals } from './shared-memory.js';
export { EventFd } from './eventfd.js';
export { FdWatcher, type FdWatcherEvents } from './watcher.js';
export { UnixSocket, MESSAGE_SIZE, type Received, type ListenOptions } from './unix-socket.js';
export { closeFd } from './fd.js';
export * from './protocol.js';
export {
  PeerServer,
  DEFAULT_SOCKET_PATH,
  DEFAULT_SIZE,
  DEFAULT_MAX_PEERS,
  MAX_SERVER_VECTORS,
  roundUpToPowerOfTwo,
  type PeerServerOptions,
  type PeerServerEvents,
  type PeerInfo,
  type LeaveReason,
} from './server.js';
export { Peer, DEFAULT_MAX_SIZE, type PeerOptions, type PeerEvents } from './peer.js';
export { BitmaskDoorbell, type ReceiveOptions } from './bitmask-doorbell.js';
export { HEADER_MAGIC, HEADER_VERSION, headerLayout, readHeader, type HeaderLayout } from './header.js';
export type { DoorbellCounters } from './binding.js';
export * from './devices/index.js';
export {
  ChannelProducer,
  ChannelConsumer,
  createChannel,
  waitForChannel,
  openDuplex,
  createFanIn,
  channelBytes,
  maxMessage,
  type CreateChannelOptions,
  type ReceivedMessage,
  type DuplexOptions,
  type Duplex,
  type FanInLayout,
  type ProducerEvents,
  type ConsumerEvents,
} from './channel.js';
