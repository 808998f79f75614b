/** Argument checks shared by the wrappers: a wrong type is a TypeError, a wrong value a RangeError. */
import { DeviceError } from './errors.js';

export function integer(name: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number') {
    throw new TypeError(`${name} must be a number, got ${describe(value)}`);
  }
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`${name} must be an integer from ${min} to ${max}, got ${value}`);
  }
  return value;
}

export function string(name: string, value: unknown): string {
  if (typeof value !== 'string') throw new TypeError(`${name} must be a string, got ${describe(value)}`);
  return value;
}

export function bool(name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw new TypeError(`${name} must be a boolean, got ${describe(value)}`);
  return value;
}

export function fd(name: string, value: unknown): number {
  return integer(name, value, 0, 2 ** 31 - 1);
}

export function bytes(name: string, value: unknown): Uint8Array {
  if (!(value instanceof Uint8Array)) throw new TypeError(`${name} must be a Uint8Array, got ${describe(value)}`);
  return value;
}

export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return `an instance of ${value.constructor?.name ?? 'Object'}`;
  if (typeof value === 'string') return `the string ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)}`;
  return `${typeof value} ${String(value)}`;
}

const PCI_ADDRESS = /^(?:([0-9a-f]{4}):)?([0-9a-f]{2}):([0-1][0-9a-f])\.([0-7])$/;

/** 'DDDD:BB:DD.F' from 'DDDD:BB:DD.F' or 'BB:DD.F' (domain 0000), lower case; DeviceError 'bad-address' otherwise. */
export function pciAddress(address: string): string {
  string('address', address);
  const m = PCI_ADDRESS.exec(address.trim().toLowerCase());
  if (m === null) throw new DeviceError('bad-address', address, `${JSON.stringify(address)} is not a PCI address (DDDD:BB:DD.F, e.g. 0000:00:02.0)`);
  return `${m[1] ?? '0000'}:${m[2]}:${m[3]}.${m[4]}`;
}
