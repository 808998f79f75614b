import { describe, expect, it } from 'vitest';
import { formatSize, parseSize } from '../../cli/size.js';

describe('parseSize', () => {
  it.each([
    ['4096', 4096],
    ['5000', 5000],
    ['1k', 1024],
    ['64K', 65536],
    ['4M', 4 * 2 ** 20],
    ['4m', 4 * 2 ** 20],
    ['1G', 2 ** 30],
    ['1T', 2 ** 40],
  ])('%s is %d bytes', (text, bytes) => {
    expect(parseSize(text)).toBe(bytes);
  });

  it.each(['', 'abc', '1.5M', '-1', '4MB', '4 M M', '0x1000', 'M', '99999999999999999999G'])('refuses %j', (text) => {
    expect(() => parseSize(text)).toThrow(RangeError);
  });
});

describe('formatSize', () => {
  it.each([
    [4 * 2 ** 20, '4M'],
    [8192, '8K'],
    [5000, '5000'],
    [2 ** 40, '1T'],
    [1536, '1536'],
  ])('%d is %s', (bytes, text) => {
    expect(formatSize(bytes)).toBe(text);
  });
});
