// Inside a VM, as root: ring the first other live peer through QEMU's ivshmem-doorbell device.
import { BitmaskDoorbell, GuestDevice } from 'ivshmem';

const dev = GuestDevice.open({ bind: true, bitmask: true }); // binds it to vfio-pci
const bell = new BitmaskDoorbell(dev);
const [peer] = dev.peers(); // who is live: the bitmask header says
const edge = bell.ring(peer.id); // a Doorbell write only on the 0->1 edge of its bit
console.log(`peer ${dev.id} rang peer ${peer.id}: ${edge ? 'one Doorbell write' : 'suppressed'}`);
dev.close(); // and unbound again
