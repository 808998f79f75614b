export { Legacy2010Device, LEGACY2010_REGISTERS, LEGACY_BROADCAST, LEGACY_STATE_BYTES, type Legacy2010Options, type Legacy2010Registers, type Legacy2010Events } from './legacy2010.js';
export { QemuDevice, QEMU_REGISTERS, type QemuRegisters, type QemuDeviceEvents } from './qemu.js';
export { BitmaskDevice, BITMASK_REGISTERS, type BitmaskRegisters, type BitmaskDeviceOptions } from './bitmask.js';
export type { Access, DeviceStats, DesignName, InterceptCounter, RegisterDef, RegisterMap, RegisterTraps, ReadableOf, WritableOf } from './registers.js';
export { DeviceModel, type EventMap } from './device-model.js';
