export * from './core/errors.js';
export { SharedMemory, normalizeShmName, type CreateOptions, type FromFdOptions, type Seals, type MemoryView } from './sys/shared-memory.js';
export { EventFd } from './sys/eventfd.js';
export { FdWatcher, type FdWatcherEvents } from './sys/watcher.js';
export { UnixSocket, MESSAGE_SIZE, type Received, type ListenOptions } from './sys/unix-socket.js';
export { closeFd } from './sys/fd.js';
export * from './protocol/wire.js';
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
} from './network/server.js';
export { Peer, DEFAULT_MAX_SIZE, type PeerOptions, type PeerEvents } from './network/peer.js';
export { BitmaskDoorbell, type ReceiveOptions } from './doorbell/bitmask-doorbell.js';
export { HEADER_MAGIC, HEADER_VERSION, headerLayout, readHeader, type HeaderLayout } from './protocol/header.js';
export type { InterruptCounters, DoorbellCounters } from './sys/interrupt-table.js';
export type { Endpoint, EndpointEvents, PendingBits, PeerVectors } from './endpoint/endpoint.js';
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
} from './channel/channel.js';
