/*
 * The C pong of `ivshmem bench --vm`: the smallest program that answers the host's rings from
 * inside the guest, so that the Node agent's round trip has a baseline in the same guest.
 * It opens the ivshmem-doorbell device through VFIO (already bound to vfio-pci), wires MSI-X
 * vector 0 to an eventfd, and answers every interrupt with one Doorbell write to the host's
 * vector 0: blocking read(), one store. No policy, no allocation in the loop.
 *
 * Usage: vfio-pong ADDRESS GROUP HOST_ID ROUNDS TIMEOUT_S
 * Prints "VFIO-PONG-READY id=N" once it listens and "VFIO-PONG-DONE n=N" at the end (exit 0),
 * or "VFIO-PONG-ERROR ..." (exit 1). A wait longer than TIMEOUT_S ends it with an error.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

static void fail(const char *what) {
  printf("VFIO-PONG-ERROR %s: %s\n", what, strerror(errno));
  fflush(stdout);
  exit(1);
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: vfio-pong ADDRESS GROUP HOST_ID ROUNDS TIMEOUT_S\n");
    return 2;
  }
  const char *address = argv[1];
  char group_path[64];
  snprintf(group_path, sizeof group_path, "/dev/vfio/%s", argv[2]);
  uint32_t host = (uint32_t)strtoul(argv[3], NULL, 10);
  long rounds = strtol(argv[4], NULL, 10);
  int timeout_ms = (int)strtol(argv[5], NULL, 10) * 1000;

  int container = open("/dev/vfio/vfio", O_RDWR);
  if (container < 0) fail("open /dev/vfio/vfio");
  int group = open(group_path, O_RDWR);
  if (group < 0) fail("open the IOMMU group");
  struct vfio_group_status status = {.argsz = sizeof status};
  if (ioctl(group, VFIO_GROUP_GET_STATUS, &status) < 0) fail("VFIO_GROUP_GET_STATUS");
  if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE)) {
    errno = EBUSY;
    fail("group not viable");
  }
  if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) < 0) fail("VFIO_GROUP_SET_CONTAINER");
  if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU) < 0) fail("VFIO_SET_IOMMU");
  int device = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, address);
  if (device < 0) fail("VFIO_GROUP_GET_DEVICE_FD");

  struct vfio_region_info bar0 = {.argsz = sizeof bar0, .index = VFIO_PCI_BAR0_REGION_INDEX};
  if (ioctl(device, VFIO_DEVICE_GET_REGION_INFO, &bar0) < 0) fail("BAR0 region info");
  volatile uint32_t *regs = mmap(NULL, bar0.size, PROT_READ | PROT_WRITE, MAP_SHARED, device, (off_t)bar0.offset);
  if (regs == MAP_FAILED) fail("mmap BAR0");

  /* Bus master on: without it QEMU drops the device's MSI-X writes. */
  struct vfio_region_info config = {.argsz = sizeof config, .index = VFIO_PCI_CONFIG_REGION_INDEX};
  if (ioctl(device, VFIO_DEVICE_GET_REGION_INFO, &config) < 0) fail("config region info");
  uint16_t command;
  if (pread(device, &command, 2, (off_t)config.offset + 4) != 2) fail("read PCI_COMMAND");
  command |= 4;
  if (pwrite(device, &command, 2, (off_t)config.offset + 4) != 2) fail("write PCI_COMMAND");

  int efd = eventfd(0, EFD_CLOEXEC);
  if (efd < 0) fail("eventfd");
  char irq_buf[sizeof(struct vfio_irq_set) + sizeof(int32_t)];
  struct vfio_irq_set *irq = (struct vfio_irq_set *)irq_buf;
  irq->argsz = sizeof irq_buf;
  irq->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
  irq->index = VFIO_PCI_MSIX_IRQ_INDEX;
  irq->start = 0;
  irq->count = 1;
  memcpy(irq->data, &efd, sizeof efd);
  if (ioctl(device, VFIO_DEVICE_SET_IRQS, irq) < 0) fail("VFIO_DEVICE_SET_IRQS");

  printf("VFIO-PONG-READY id=%u\n", regs[2]); /* IVPosition */
  fflush(stdout);
  const uint32_t doorbell = host << 16; /* vector 0 */
  long n = 0;
  struct pollfd p = {.fd = efd, .events = POLLIN};
  while (n < rounds) {
    int r = poll(&p, 1, timeout_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) fail("poll");
    if (r == 0) {
      errno = ETIMEDOUT;
      printf("VFIO-PONG-ERROR after %ld rounds: ", n);
      fail("no ring");
    }
    uint64_t count;
    if (read(efd, &count, sizeof count) != sizeof count) fail("read eventfd");
    regs[3] = doorbell; /* Doorbell: one trap */
    n++;
  }
  printf("VFIO-PONG-DONE n=%ld\n", n);
  fflush(stdout);
  return 0;
}
