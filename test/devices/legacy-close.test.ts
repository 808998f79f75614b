/** A device model outliving its peer. */
import { afterEach, describe, expect, it } from 'vitest';
import { Legacy2010Device } from '../../lib/devices/index.js';
import { closeTracked, track, twoPeers } from '../helpers/network.js';

afterEach(closeTracked);

describe('devices', () => {
  it('a legacy device whose peer closes right after an IntrMask write does not throw later', async () => {
    const { b } = await twoPeers();
    const device = new Legacy2010Device(b);
    device.writew('IntrMask', 0xffff); // queues a look at IntrStatus
    b.close();
    await new Promise((r) => setImmediate(r)); // the queued look runs: it must not touch the memory
    expect(device.closed).toBe(true);
  });
});
