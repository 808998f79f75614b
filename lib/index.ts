/**
 * `ivshmem`: peers, the server, the guest's device (inside a VM), the bitmask doorbell, channels
 * and errors. The building blocks
 * below them are in `ivshmem/sys`, the formats in `ivshmem/protocol`, the register models of
 * the three designs in `ivshmem/devices`.
 */
export * from './core/errors.js';
export {
  PeerServer,
  DEFAULT_SOCKET_PATH,
  DEFAULT_SIZE,
  DEFAULT_MAX_PEERS,
  MAX_QUEUED,
  DEFAULT_LEASE_TIMEOUT,
  MAX_SERVER_SIZE,
  MAX_SERVER_VECTORS,
  roundUpToPowerOfTwo,
  type PeerServerOptions,
  type PeerServerEvents,
  type PeerInfo,
  type LeaveReason,
  type ExistingShmPolicy,
  type LeftoverShm,
} from './network/server.js';
export { Peer, DEFAULT_MAX_SIZE, type PeerOptions, type PeerEvents } from './network/peer.js';
export type { Endpoint, EndpointEvents, PendingBits, PeerVectors } from './endpoint/endpoint.js';
export { GuestDevice, type GuestDeviceOptions, type GuestRegisters } from './guest/guest-device.js';
export { listDevices, type GuestDeviceInfo, type BarInfo } from './guest/discovery.js';
export { BitmaskDoorbell, type ReceiveOptions } from './doorbell/bitmask-doorbell.js';
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
  type MessageHandler,
  type ConsumerOptions,
  type ProducerOptions,
  type DuplexOptions,
  type Duplex,
  type FanInLayout,
  type ProducerEvents,
  type ConsumerEvents,
} from './channel/channel.js';
// Types that appear in the signatures above (their classes and functions live in the subpaths).
export type { SharedMemory, MemoryView, Seals } from './sys/shared-memory.js';
export type { InterruptCounters } from './sys/interrupt-table.js';
export type { HeaderLayout } from './protocol/header.js';
export type { ChannelInfo } from './protocol/channel-layout.js';
