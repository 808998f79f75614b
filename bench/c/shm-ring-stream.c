/*
 * The channel's ring in C: the ceiling of a single-producer / single-consumer stream over
 * shared memory. Compiled by `ivshmem bench` with `cc -O2` into its cache folder.
 *
 *   shm-ring-stream MESSAGES SIZE [cross|none]
 *
 * A memfd of 256 + 64 KiB is mapped shared, then the process forks: the parent produces, the
 * child consumes. The layout is the channel's (docs/channel.md): head at +64, tail at +128,
 * records (u32 length + payload, 8-byte aligned, the pad marker 0xFFFFFFFF before a record that
 * would cross the end) from +256. The producer writes as many records as fit and publishes the
 * head once (a release store); the consumer reads the head once (acquire), walks the records
 * and stores the tail once. Both spin. `cross` pins them to two CPUs. Prints one line of JSON:
 * messages and the elapsed ns from the producer's start to the consumer's last record.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROGRAM "shm-ring-stream"
#include "common.h"

#define CAPACITY 65536u
#define PAD 0xffffffffu

struct ring {
  uint32_t header[16];
  _Alignas(64) uint32_t head;
  _Alignas(64) uint32_t tail;
  _Alignas(64) uint64_t start_ns; /* written by the producer before its first record */
  _Alignas(64) uint64_t end_ns;   /* written by the consumer after its last one */
  _Alignas(64) unsigned char data[CAPACITY];
};

int main(int argc, char **argv) {
  long messages = argc > 1 ? strtol(argv[1], NULL, 10) : 1000000;
  long size = argc > 2 ? strtol(argv[2], NULL, 10) : 64;
  const char *placement = argc > 3 ? argv[3] : "none";
  if (messages < 1 || size < 0 || size > (long)(CAPACITY / 2 - 8)) {
    fprintf(stderr, "usage: shm-ring-stream MESSAGES SIZE [cross|none]\n");
    return 2;
  }
  int cross = strcmp(placement, "cross") == 0 && allowed_cpu(1) >= 0;
  int fd = memfd_create("shm-ring-stream", MFD_CLOEXEC);
  if (fd < 0) die("memfd_create");
  if (ftruncate(fd, sizeof(struct ring)) != 0) die("ftruncate");
  struct ring *r = mmap(NULL, sizeof(struct ring), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (r == MAP_FAILED) die("mmap");
  const uint32_t record = (uint32_t)((4 + size + 7) & ~7L);
  const uint32_t mask = CAPACITY - 1;

  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    if (cross) pin_to(allowed_cpu(1));
    uint32_t tail = 0;
    unsigned check = 0;
    for (long count = 0; count < messages;) {
      uint32_t head = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
      if (head == tail) continue;
      while (tail != head) {
        uint32_t pos = tail & mask;
        uint32_t length;
        memcpy(&length, r->data + pos, 4);
        if (length == PAD) {
          tail += CAPACITY - pos;
          continue;
        }
        check ^= r->data[pos + 4]; /* touch the payload, as a reader would */
        tail += (4 + length + 7) & ~7u;
        count++;
      }
      __atomic_store_n(&r->tail, tail, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&r->end_ns, now_ns(), __ATOMIC_RELEASE);
    _exit(check == 0xffffffffu ? 3 : 0);
  }
  if (cross) pin_to(allowed_cpu(0));
  unsigned char *message = malloc(size > 0 ? size : 1);
  memset(message, 0x5a, size > 0 ? size : 1);
  usleep(10000); /* let the child start spinning */
  uint64_t start = now_ns();
  uint32_t head = 0;
  for (long left = messages; left > 0;) {
    uint32_t tail = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE);
    int wrote = 0;
    while (left > 0) {
      uint32_t pos = head & mask;
      uint32_t contiguous = CAPACITY - pos;
      uint32_t need = contiguous < record ? contiguous + record : record;
      if (CAPACITY - (head - tail) < need) break;
      uint32_t at = pos;
      if (contiguous < record) {
        uint32_t pad = PAD;
        memcpy(r->data + pos, &pad, 4);
        head += contiguous;
        at = 0;
      }
      uint32_t length = (uint32_t)size;
      memcpy(r->data + at + 4, message, size);
      memcpy(r->data + at, &length, 4);
      head += record;
      left--;
      wrote = 1;
    }
    if (wrote) __atomic_store_n(&r->head, head, __ATOMIC_RELEASE);
  }
  int status;
  if (waitpid(child, &status, 0) < 0) die("waitpid");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "shm-ring-stream: the consumer failed\n");
    return 1;
  }
  uint64_t end = __atomic_load_n(&r->end_ns, __ATOMIC_ACQUIRE);
  printf("{\"messages\":%ld,\"size\":%ld,\"placement\":\"%s\",\"elapsedNs\":%llu}\n", messages, size, cross ? "cross" : "none", (unsigned long long)(end - start));
  return 0;
}
