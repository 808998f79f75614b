/*
 * eventfd ping-pong between two processes: the floor for any doorbell that is an eventfd.
 * Compiled by `ivshmem bench` with `cc -O2` into its cache folder.
 *
 *   eventfd-pingpong ROUNDS [block|epoll] [cross|same|none]
 *
 * The parent writes eventfd A, the child (forked) wakes, reads A and writes eventfd B, the
 * parent wakes and reads B: one round trip. `block` waits in read(2) (blocking eventfds);
 * `epoll` waits in epoll_wait(2) and then reads (non-blocking eventfds), as an event loop such
 * as Node's does. Placement: `cross` pins the two processes to two different CPUs (the first
 * two this process may use), `same` pins both to one CPU, `none` leaves it to the scheduler
 * (on a VM the two differ by an order of magnitude: waking a halted vCPU is expensive).
 * Prints one line of JSON: round trips, p50/p99/mean round trip (ns), and the elapsed time of
 * the timed rounds (ns). 1000 untimed warm-up rounds come first.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROGRAM "eventfd-pingpong"
#include "common.h"

#define WARMUP 1000

static int use_epoll = 0;

static void signal_fd(int fd) {
  uint64_t one = 1;
  while (write(fd, &one, sizeof one) != sizeof one) {
    if (errno != EINTR) die("write");
  }
}

/* Waits until `fd` has been signalled and drains it. */
static void wait_fd(int fd, int ep) {
  uint64_t value;
  for (;;) {
    if (use_epoll) {
      struct epoll_event ev;
      int n = epoll_wait(ep, &ev, 1, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        die("epoll_wait");
      }
    }
    ssize_t r = read(fd, &value, sizeof value);
    if (r == sizeof value) return;
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    die("read");
  }
}

static int make_epoll(int fd) {
  if (!use_epoll) return -1;
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  struct epoll_event ev = {.events = EPOLLIN, .data = {.fd = fd}};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
  return ep;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  long rounds = argc > 1 ? strtol(argv[1], NULL, 10) : 10000;
  if (rounds < 1 || rounds > 100000000) {
    fprintf(stderr, "usage: eventfd-pingpong ROUNDS [block|epoll]\n");
    return 2;
  }
  use_epoll = argc > 2 && strcmp(argv[2], "epoll") == 0;
  const char *placement = argc > 3 ? argv[3] : "none";
  int parent_cpu = -1, child_cpu = -1;
  if (strcmp(placement, "cross") == 0) {
    parent_cpu = allowed_cpu(0);
    child_cpu = allowed_cpu(1);
    if (child_cpu < 0) placement = "none"; /* one CPU only */
  } else if (strcmp(placement, "same") == 0) {
    parent_cpu = child_cpu = allowed_cpu(0);
  } else {
    placement = "none";
  }
  int pinned = strcmp(placement, "none") != 0;
  int flags = EFD_CLOEXEC | (use_epoll ? EFD_NONBLOCK : 0);
  int a = eventfd(0, flags), b = eventfd(0, flags);
  if (a < 0 || b < 0) die("eventfd");
  long total = rounds + WARMUP;

  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    if (pinned) pin_to(child_cpu);
    int ep = make_epoll(a);
    for (long i = 0; i < total; i++) {
      wait_fd(a, ep);
      signal_fd(b);
    }
    _exit(0);
  }

  if (pinned && pin_to(parent_cpu) != 0) placement = "none";
  int ep = make_epoll(b);
  uint64_t *rtt = malloc(sizeof *rtt * (size_t)rounds);
  if (rtt == NULL) die("malloc");
  uint64_t start = 0;
  for (long i = 0; i < total; i++) {
    if (i == WARMUP) start = now_ns();
    uint64_t t0 = now_ns();
    signal_fd(a);
    wait_fd(b, ep);
    if (i >= WARMUP) rtt[i - WARMUP] = now_ns() - t0;
  }
  uint64_t elapsed = now_ns() - start;
  int status = 0;
  waitpid(child, &status, 0);

  double sum = 0;
  for (long i = 0; i < rounds; i++) sum += (double)rtt[i];
  qsort(rtt, (size_t)rounds, sizeof *rtt, cmp_u64);
  long i50 = (rounds * 50 + 99) / 100 - 1, i99 = (rounds * 99 + 99) / 100 - 1;
  if (i50 < 0) i50 = 0;
  if (i99 < 0) i99 = 0;
  printf("{\"roundTrips\":%ld,\"mode\":\"%s\",\"placement\":\"%s\",\"rttP50Ns\":%llu,\"rttP99Ns\":%llu,\"rttMeanNs\":%.1f,"
         "\"elapsedNs\":%llu}\n",
         rounds, use_epoll ? "epoll" : "block", placement, (unsigned long long)rtt[i50], (unsigned long long)rtt[i99],
         sum / (double)rounds, (unsigned long long)elapsed);
  free(rtt);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
