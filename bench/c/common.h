/*
 * What the C baselines share: the clock, the fatal error, and pinning to the CPUs this process
 * may use. Each program defines PROGRAM (its name, for messages) before including this.
 */
#ifndef IVSHMEM_BENCH_COMMON_H
#define IVSHMEM_BENCH_COMMON_H
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, PROGRAM ": %s: %s\n", what, strerror(errno));
  exit(1);
}

/* The index-th CPU this process may run on, or -1. */
static int allowed_cpu(int index) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
  for (int cpu = 0, seen = 0; cpu < CPU_SETSIZE; cpu++) {
    if (CPU_ISSET(cpu, &set) && seen++ == index) return cpu;
  }
  return -1;
}

/* Pins the calling process to `cpu`; returns 0, or -1 (and says why on stderr). */
static int pin_to(int cpu) {
  if (cpu < 0) return -1;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) {
    fprintf(stderr, PROGRAM ": sched_setaffinity(%d): %s\n", cpu, strerror(errno));
    return -1;
  }
  return 0;
}
#endif
