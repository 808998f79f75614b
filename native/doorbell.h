// The doorbell hot path: one peer's view of the eventfd table (peer x vector) and, in bitmask
// mode, of the pending and live bit words in the shared header. Counters of every kernel
// crossing live here, next to the syscalls they count.
//
// Hot operations are raw Node-API functions bound to the state (no ObjectWrap unwrap, no
// node-addon-api wrappers): a suppressed ring is on every message's path.
#pragma once
#include <napi.h>

#include <memory>
#include <vector>

#include "addon.h"
#include "mapping.h"

namespace ivshmem {

// Doubles, in this order, so that JS can see them as a Float64Array (binding.ts COUNTER_INDEX).
struct DoorbellCounters {
  double rings = 0;          // ring() and each peer a broadcast() addressed
  double suppressed = 0;     // rings that found the pending bit already set: no syscall at all
  double signals = 0;        // 0->1 edges this peer made (each one an eventfd write)
  double eventfdWrites = 0;  // write(2) on an eventfd
  double eventfdReads = 0;   // read(2) on an eventfd (including the one that finds EAGAIN)
  double wakeups = 0;        // times the event loop woke this peer for an own eventfd
  double spurious = 0;       // wakeups that found the eventfd already drained
  double interrupts = 0;     // wakeups that delivered an interrupt to the application
  double acks = 0;           // clears of the own pending bit
};

struct DoorbellState {
  std::shared_ptr<Region> region;
  uint32_t self = 0;
  // Bitmask mode (words > 0): the header's 64-bit words per bit set, and the byte offsets of
  // the pending and live words in the region.
  uint32_t words = 0;
  uint32_t pendingOffset = 0;
  uint32_t liveOffset = 0;
  std::vector<std::vector<int>> fds;  // [peer][vector] -> eventfd (our dup)
  std::vector<int> own;             // own eventfds by vector (our dups)
  std::vector<uint32_t> known;      // peers with eventfds, as bits by ID (bitmask mode)
  DoorbellCounters counters;
  bool closed = false;

  // The bit sets are worked on as 32-bit words, the width of JS's Atomics on an Int32Array and
  // of the server's: one width for every party on the same memory. Bit `id` is bit id % 32 of
  // word id / 32 (on little-endian, the same bit as in the header's 64-bit words).
  uint32_t Words32() const { return words * 2; }
  static uint32_t Bit(uint32_t id) { return uint32_t{1} << (id & 31); }
  uint32_t* Word(uint32_t offset, uint32_t index) const {
    return reinterpret_cast<uint32_t*>(static_cast<uint8_t*>(region->addr) + offset) + index;
  }
  int FdOf(uint32_t peer, uint32_t vector) const {
    if (peer == self) return vector < own.size() ? own[vector] : -1;
    return peer < fds.size() && vector < fds[peer].size() ? fds[peer][vector] : -1;
  }
  void ClosePeer(uint32_t peer);
  bool Usable() const { return !closed && region && region->addr != nullptr; }
  // write(2) of 1 to an eventfd, counted. False if the kernel refused (errno set).
  bool Signal(int fd);
  void CloseFds();
  ~DoorbellState() { CloseFds(); }
};

class Doorbell : public Napi::ObjectWrap<Doorbell>, public Resource {
 public:
  static void Init(Napi::Env env, Napi::Object exports, AddonData* data);
  // new Doorbell(mapping, { self, words, pendingOffset, liveOffset })
  explicit Doorbell(const Napi::CallbackInfo& info);
  ~Doorbell() override;
  void Teardown() override;

 private:
  Napi::Value SetPeer(const Napi::CallbackInfo& info);
  Napi::Value RemovePeer(const Napi::CallbackInfo& info);
  Napi::Value SetOwn(const Napi::CallbackInfo& info);
  Napi::Value GetCounters(const Napi::CallbackInfo& info);
  Napi::Value ResetCounters(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  void Release();

  std::shared_ptr<DoorbellState> state_;
};

}  // namespace ivshmem
