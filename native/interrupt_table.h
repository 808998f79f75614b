// The interrupt table: one peer's eventfds by (peer, vector) — its own, whose signals wake it,
// and every other peer's, which it rings — with counters of every kernel crossing next to the
// system calls they count. It knows no protocol: the bitmask's bit operations are TypeScript's
// (lib/sys/interrupt-table.ts), which calls in here only for the system call of an edge.
//
// Hot operations are raw Node-API functions bound to the state (no ObjectWrap unwrap, no
// node-addon-api wrappers): a signal is on every edge's path.
#pragma once
#include <napi.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "addon.h"
#include "mmio.h"

namespace ivshmem {

// The counters, written once: the struct's fields and the names JS finds them by (the class's
// `counterNames`, in the order of the doubles in `countersBuffer`) both come from this list.
#define IVSHMEM_INTERRUPT_COUNTERS(X)                                                        \
  X(rings)         /* rings of a pending bit: suppressed ones and edges (counted in JS) */   \
  X(suppressed)    /* rings that found the bit already set: no system call at all */         \
  X(signals)       /* 0->1 edges made (each one an eventfd write) */                         \
  X(eventfdWrites) /* write(2) on an eventfd */                                              \
  X(doorbellWrites) /* 32-bit stores to a Doorbell register (inside a VM: one exit each) */  \
  X(eventfdReads)  /* read(2) on an eventfd (including the one that finds EAGAIN) */         \
  X(wakeups)       /* times the event loop woke this peer for an own eventfd */              \
  X(spurious)      /* wakeups that found the eventfd already drained */                      \
  X(interrupts)    /* wakeups that delivered an interrupt to the application */              \
  X(acks)          /* clears of the own pending bit (counted in JS) */

struct InterruptCounters {
#define IVSHMEM_COUNTER_FIELD(name) double name = 0;
  IVSHMEM_INTERRUPT_COUNTERS(IVSHMEM_COUNTER_FIELD)
#undef IVSHMEM_COUNTER_FIELD
};

// Peer IDs of the ivshmem-server protocol are 16-bit.
constexpr size_t kPeerIds = 65536;

struct TableState {
  uint32_t self = 0;
  std::vector<std::vector<int>> fds;  // [peer][vector] -> eventfd, adopted (ours to close)
  std::vector<uint32_t> order;        // other peers, in the order their first vector arrived
  // Vectors held per peer ID, own included: the one record of who can be rung, which JS reads
  // in place (`vectorsBuffer`) instead of keeping a copy.
  uint16_t vectors[kPeerIds] = {};
  InterruptCounters counters;
  bool closed = false;
  // Doorbell mode (a guest's device): every signal is a store of dest << 16 | vector to this
  // register, for any peer with vectors, own included; the own eventfds only wake.
  std::shared_ptr<Mmio> doorbell;
  uint32_t doorbellOffset = 0;

  int FdOf(uint32_t peer, uint32_t vector) const {
    return peer < fds.size() && vector < fds[peer].size() ? fds[peer][vector] : -1;
  }
  // write(2) of 1 to an eventfd, counted. False if the kernel refused (errno set).
  bool Signal(int fd);
  void ClosePeer(uint32_t peer);
  // Takes `peer` out of `order` (it can no longer be rung).
  void Unlist(uint32_t peer);
  void CloseAll();
  ~TableState() { CloseAll(); }
};

class InterruptTable : public Napi::ObjectWrap<InterruptTable>, public Resource {
 public:
  static void Init(Napi::Env env, Napi::Object exports, AddonData* data);
  // new InterruptTable(self)
  explicit InterruptTable(const Napi::CallbackInfo& info);
  ~InterruptTable() override;
  void Teardown() override;

 private:
  Napi::Value Add(const Napi::CallbackInfo& info);
  Napi::Value Remove(const Napi::CallbackInfo& info);
  Napi::Value Peers(const Napi::CallbackInfo& info);
  Napi::Value SetDoorbell(const Napi::CallbackInfo& info);
  Napi::Value SetVectors(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  void Release();

  std::shared_ptr<TableState> state_;
};

}  // namespace ivshmem
