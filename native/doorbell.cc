#include "doorbell.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <exception>

#include "errors.h"

namespace ivshmem {

// Return codes of the hot functions, beside 0 (suppressed / nothing) and 1 (signalled).
static constexpr int32_t kUnknownPeer = -1;
static constexpr int32_t kNoBitmask = -2;

bool DoorbellState::Signal(int fd) {
  uint64_t one = 1;
  ssize_t w;
  do {
    w = write(fd, &one, sizeof one);
  } while (w < 0 && errno == EINTR);
  counters.eventfdWrites++;
  return w == sizeof one;
}

void DoorbellState::ClosePeer(uint32_t peer) {
  if (peer >= fds.size()) return;
  for (int fd : fds[peer]) close(fd);
  fds[peer].clear();
}

void DoorbellState::CloseFds() {
  for (uint32_t p = 0; p < fds.size(); p++) ClosePeer(p);
  for (int fd : own) close(fd);
  own.clear();
}

// ---- hot path: raw Node-API functions, `data` = DoorbellState --------------------------------

// A C++ exception must never leave a raw callback (it would unwind into V8: std::terminate).
// Building an error can throw (a property set runs a hostile setter), so every raw function
// runs under this: what it throws becomes the JS exception. Free when nothing throws.
template <napi_callback Fn>
static napi_value Guarded(napi_env env, napi_callback_info info) noexcept {
  try {
    return Fn(env, info);
  } catch (const Napi::Error& e) {
    try {
      e.ThrowAsJavaScriptException();
    } catch (...) {
      // An exception is pending already, or nothing can be thrown any more.
    }
  } catch (const std::exception& e) {
    napi_throw_error(env, nullptr, e.what());
  } catch (...) {
    napi_throw_error(env, nullptr, "unknown C++ exception in the doorbell");
  }
  return nullptr;
}

static DoorbellState* StateOf(napi_env env, napi_callback_info info, size_t* argc, napi_value* argv) {
  void* data = nullptr;
  napi_get_cb_info(env, info, argc, argv, nullptr, &data);
  auto* state = static_cast<std::shared_ptr<DoorbellState>*>(data)->get();
  if (!state->Usable()) {
    napi_throw_error(env, "ERR_IVSHMEM_CLOSED", "Doorbell is closed (or its shared memory is)");
    return nullptr;
  }
  return state;
}

static napi_value Int(napi_env env, int32_t v) {
  napi_value out;
  napi_create_int32(env, v, &out);
  return out;
}

static bool ArgU32(napi_env env, napi_value v, uint32_t* out, const char* name) {
  if (napi_get_value_uint32(env, v, out) != napi_ok) {
    napi_throw_type_error(env, nullptr, (std::string(name) + " must be a number").c_str());
    return false;
  }
  return true;
}

static napi_value ThrowErrno(napi_env env, int err, const char* syscall, int fd) {
  napi_throw(env, SystemError(Napi::Env(env), err, syscall, FdDetail(fd)).Value());
  return nullptr;
}

// The eventfd write of an edge failed: take the bit back, or every later sender would be
// suppressed and `dest` never woken.
static napi_value UndoEdge(napi_env env, DoorbellState* s, uint32_t dest, int err, int fd) {
  __atomic_fetch_and(s->Word(s->pendingOffset, dest >> 5), ~DoorbellState::Bit(dest), __ATOMIC_SEQ_CST);
  return ThrowErrno(env, err, "write", fd);
}

// The 0->1 edge of dest's bit is made: count it and write dest's eventfd (or take the bit back).
static napi_value SignalEdge(napi_env env, DoorbellState* s, uint32_t dest, int fd) {
  s->counters.signals++;
  if (!s->Signal(fd)) return UndoEdge(env, s, dest, errno, fd);
  return Int(env, 1);
}

// ring(dest) -> 1 signalled (made the 0->1 edge), 0 suppressed, -1 unknown peer, -2 no bitmask.
// The order is the protocol's: full fence after the caller published its work, load, and only
// if the bit is clear a fetch_or; only the sender that turned it from 0 to 1 writes the eventfd.
static napi_value Ring(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  DoorbellState* s = StateOf(env, info, &argc, argv);
  if (s == nullptr) return nullptr;
  uint32_t dest;
  if (!ArgU32(env, argv[0], &dest, "dest")) return nullptr;
  if (s->words == 0) return Int(env, kNoBitmask);
  int fd = s->FdOf(dest, 0);
  if (fd < 0 || dest >= s->words * 64) return Int(env, kUnknownPeer);
  s->counters.rings++;
  uint32_t bit = DoorbellState::Bit(dest);
  uint32_t* word = s->Word(s->pendingOffset, dest >> 5);
  // Without this fence the load below may pass the caller's stores of the work (store-load
  // reordering, allowed on x86) and the receiver could clear its bit without seeing the work.
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (__atomic_load_n(word, __ATOMIC_SEQ_CST) & bit) {
    s->counters.suppressed++;
    return Int(env, 0);
  }
  if (__atomic_fetch_or(word, bit, __ATOMIC_SEQ_CST) & bit) {
    s->counters.suppressed++;  // another sender made the edge between our load and our or
    return Int(env, 0);
  }
  return SignalEdge(env, s, dest, fd);
}

// edge(dest) -> 1, or -1 if dest has no eventfd or no bit. The second half of a ring whose 0->1
// edge the caller already made in JS (Atomics.or on the same word, a full barrier): count and
// signal. The bound matters: a failed signal's undo clears dest's bit, which must be a pending bit.
static napi_value Edge(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  DoorbellState* s = StateOf(env, info, &argc, argv);
  if (s == nullptr) return nullptr;
  uint32_t dest;
  if (!ArgU32(env, argv[0], &dest, "dest")) return nullptr;
  if (s->words == 0) return Int(env, kNoBitmask);
  int fd = s->FdOf(dest, 0);
  if (fd < 0 || dest >= s->words * 64) return Int(env, kUnknownPeer);
  s->counters.rings++;
  return SignalEdge(env, s, dest, fd);
}

// broadcast() -> how many peers were signalled. Sets the bits of every known live peer but
// self, and signals exactly those whose bits were clear.
static napi_value Broadcast(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  DoorbellState* s = StateOf(env, info, &argc, nullptr);
  if (s == nullptr) return nullptr;
  if (s->words == 0) return Int(env, kNoBitmask);
  int32_t signalled = 0;
  int failedFd = -1;
  int failedErrno = 0;
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  for (uint32_t w = 0; w < s->Words32(); w++) {
    uint32_t mask = s->known[w] & __atomic_load_n(s->Word(s->liveOffset, w), __ATOMIC_SEQ_CST);
    if ((s->self >> 5) == w) mask &= ~DoorbellState::Bit(s->self);
    if (mask == 0) continue;
    uint32_t old = __atomic_fetch_or(s->Word(s->pendingOffset, w), mask, __ATOMIC_SEQ_CST);
    uint32_t edges = mask & ~old;
    s->counters.rings += __builtin_popcount(mask);
    s->counters.suppressed += __builtin_popcount(mask & old);
    while (edges != 0) {
      uint32_t peer = w * 32 + static_cast<uint32_t>(__builtin_ctz(edges));
      edges &= edges - 1;
      int fd = s->FdOf(peer, 0);
      s->counters.signals++;
      if (s->Signal(fd)) {
        signalled++;
      } else if (failedFd < 0) {
        // Signal the others first; this one's bit must not stay set with nobody woken.
        failedErrno = errno;
        failedFd = fd;
        __atomic_fetch_and(s->Word(s->pendingOffset, w), ~DoorbellState::Bit(peer), __ATOMIC_SEQ_CST);
      }
    }
  }
  if (failedFd >= 0) return ThrowErrno(env, failedErrno, "write", failedFd);
  return Int(env, signalled);
}

// signal(dest, vector) -> 1, or -1 if that peer/vector has no eventfd. The plain eventfd ring
// of the register designs (no bits), counted like the rest.
static napi_value SignalFn(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  DoorbellState* s = StateOf(env, info, &argc, argv);
  if (s == nullptr) return nullptr;
  uint32_t dest, vector = 0;
  if (!ArgU32(env, argv[0], &dest, "dest")) return nullptr;
  if (argc > 1 && !ArgU32(env, argv[1], &vector, "vector")) return nullptr;
  int fd = s->FdOf(dest, vector);
  if (fd < 0) return Int(env, kUnknownPeer);
  if (!s->Signal(fd)) return ThrowErrno(env, errno, "write", fd);
  return Int(env, 1);
}

// The three operations on the own pending bit share their preamble: `op(state, word, bit)`
// returns the old value of the word.
template <typename Op>
static napi_value OnOwnBit(napi_env env, napi_callback_info info, Op op) {
  size_t argc = 0;
  DoorbellState* s = StateOf(env, info, &argc, nullptr);
  if (s == nullptr) return nullptr;
  if (s->words == 0) return Int(env, kNoBitmask);
  uint32_t bit = DoorbellState::Bit(s->self);
  return Int(env, (op(*s, s->Word(s->pendingOffset, s->self >> 5), bit) & bit) ? 1 : 0);
}

// ack() -> 1 if the own bit was set. Clears it (seq_cst); the caller must then re-check its
// work sources, since a sender that saw the bit still set did not signal.
static napi_value Ack(napi_env env, napi_callback_info info) {
  return OnOwnBit(env, info, [](DoorbellState& s, uint32_t* word, uint32_t bit) {
    s.counters.acks++;
    return __atomic_fetch_and(word, ~bit, __ATOMIC_SEQ_CST);
  });
}

// claim() -> 1 if the own bit was already set. Sets it without signalling: a receiver that
// keeps working (or busy-polls) after a re-check found more work keeps senders suppressed.
static napi_value Claim(napi_env env, napi_callback_info info) {
  return OnOwnBit(env, info, [](DoorbellState&, uint32_t* word, uint32_t bit) {
    return __atomic_fetch_or(word, bit, __ATOMIC_SEQ_CST);
  });
}

// pending() -> 1 if the own bit is set.
static napi_value Pending(napi_env env, napi_callback_info info) {
  return OnOwnBit(env, info, [](DoorbellState&, uint32_t* word, uint32_t) { return __atomic_load_n(word, __ATOMIC_SEQ_CST); });
}

// wake(vector) -> the count drained from the own eventfd (0: spurious). Called when the event
// loop reports it readable; drains first, as the protocol requires, before the caller acts.
static napi_value Wake(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  DoorbellState* s = StateOf(env, info, &argc, argv);
  if (s == nullptr) return nullptr;
  uint32_t vector = 0;
  if (argc > 0 && !ArgU32(env, argv[0], &vector, "vector")) return nullptr;
  if (vector >= s->own.size() || s->own[vector] < 0) return Int(env, kUnknownPeer);
  int fd = s->own[vector];
  s->counters.wakeups++;
  double total = 0;
  for (;;) {
    uint64_t value;
    ssize_t r = read(fd, &value, sizeof value);
    s->counters.eventfdReads++;
    if (r == sizeof value) {
      total += static_cast<double>(value);
      // Not semaphore mode: one read took the whole count. Skip the read that would find EAGAIN.
      break;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) break;
    return ThrowErrno(env, r < 0 ? errno : EIO, "read", fd);
  }
  if (total == 0) {
    s->counters.spurious++;
  } else {
    s->counters.interrupts++;
  }
  napi_value out;
  napi_create_double(env, total, &out);
  return out;
}

// ---- lifecycle and table (not hot) --------------------------------------------------------------

void Doorbell::Init(Napi::Env env, Napi::Object exports, AddonData*) {
  Napi::Function ctor = DefineClass(env, "Doorbell",
                                    {
                                        InstanceMethod<&Doorbell::SetPeer>("setPeer"),
                                        InstanceMethod<&Doorbell::RemovePeer>("removePeer"),
                                        InstanceMethod<&Doorbell::SetOwn>("setOwn"),
                                        InstanceMethod<&Doorbell::GetCounters>("counters"),
                                        InstanceMethod<&Doorbell::ResetCounters>("resetCounters"),
                                        InstanceMethod<&Doorbell::Close>("close"),
                                    });
  exports.Set("Doorbell", ctor);
}

// Finalizer of the functions (data) and of the counters buffer (hint): drop that share.
static void DropState(napi_env, void* data, void* hint) {
  delete static_cast<std::shared_ptr<DoorbellState>*>(hint != nullptr ? hint : data);
}

static uint32_t OptU32(Napi::Object options, const char* key, uint32_t fallback) {
  Napi::Value v = options.Get(key);
  return v.IsUndefined() ? fallback : v.As<Napi::Number>().Uint32Value();
}

Doorbell::Doorbell(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Doorbell>(info), Resource(info.Env()) {
  Napi::Env env = info.Env();
  Mapping* mapping = Mapping::Unwrap(info[0]);
  if (mapping == nullptr) throw Napi::TypeError::New(env, "mapping must be a native Mapping");
  if (mapping->Base() == nullptr) throw Napi::Error::New(env, "the mapping is closed");
  Napi::Object options = info[1].As<Napi::Object>();
  state_ = std::make_shared<DoorbellState>();
  DoorbellState& s = *state_;
  s.region = mapping->RegionPtr();
  s.self = OptU32(options, "self", 0);
  s.words = OptU32(options, "words", 0);
  s.pendingOffset = OptU32(options, "pendingOffset", 0);
  s.liveOffset = OptU32(options, "liveOffset", 0);
  if (s.words > 0) {
    size_t end = std::max<size_t>(s.pendingOffset, s.liveOffset) + size_t{s.words} * 8;
    if (s.pendingOffset % 8 != 0 || s.liveOffset % 8 != 0 || end > mapping->Size()) {
      throw Napi::RangeError::New(env, "bit words must be 8-byte aligned and inside the mapping");
    }
    if (s.self >= s.words * 64) throw Napi::RangeError::New(env, "self is beyond the bit words");
    s.known.assign(s.Words32(), 0);
  }
  // The hot functions, each holding its own share of the state.
  Napi::Object self = info.This().As<Napi::Object>();
  struct Entry {
    const char* name;
    napi_callback cb;
  };
  for (Entry e : {Entry{"ring", Guarded<Ring>}, Entry{"edge", Guarded<Edge>}, Entry{"broadcast", Guarded<Broadcast>},
                  Entry{"signal", Guarded<SignalFn>}, Entry{"ack", Guarded<Ack>}, Entry{"claim", Guarded<Claim>},
                  Entry{"pending", Guarded<Pending>}, Entry{"wake", Guarded<Wake>}}) {
    auto* share = new std::shared_ptr<DoorbellState>(state_);
    napi_value fn;
    if (napi_create_function(env, e.name, NAPI_AUTO_LENGTH, e.cb, share, &fn) != napi_ok ||
        napi_add_finalizer(env, fn, share, DropState, nullptr, nullptr) != napi_ok) {
      delete share;
      throw Napi::Error::New(env, "could not create the doorbell functions");
    }
    self.Set(e.name, Napi::Value(env, fn));
  }
  // The counters themselves, as doubles in native memory, so that the JS fast path of a
  // suppressed ring counts into the same place as the native paths (no crossing needed).
  auto* share = new std::shared_ptr<DoorbellState>(state_);
  napi_value counters;
  if (napi_create_external_arraybuffer(env, &state_->counters, sizeof(DoorbellCounters), DropState, share,
                                       &counters) != napi_ok) {
    delete share;
    throw Napi::Error::New(env, "this runtime does not allow external ArrayBuffers");
  }
  self.Set("countersBuffer", Napi::Value(env, counters));
}

Doorbell::~Doorbell() { Release(); }

void Doorbell::Release() {
  if (state_) {
    state_->closed = true;
    state_->CloseFds();
    state_->region.reset();
    state_.reset();
  }
  Unregister();
}

void Doorbell::Teardown() { Release(); }

static int DupCloexec(Napi::Env env, int fd) {
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) ThrowSystemError(env, errno, "dup", FdDetail(fd));
  return copy;
}

static DoorbellState& Live(Napi::Env env, const std::shared_ptr<DoorbellState>& state) {
  if (!state || !state->Usable()) {
    Napi::Error e = Napi::Error::New(env, "Doorbell is closed (or its shared memory is)");
    e.Set("code", "ERR_IVSHMEM_CLOSED");
    throw e;
  }
  return *state;
}

// setPeer(id, fds[]): the eventfds that ring peer `id`, by vector. Kept as private dups so that
// the caller closing its EventFd can never make us write to a reused fd number.
Napi::Value Doorbell::SetPeer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DoorbellState& s = Live(env, state_);
  uint32_t id = info[0].As<Napi::Number>().Uint32Value();
  Napi::Array list = info[1].As<Napi::Array>();
  if (id > 65535) throw Napi::RangeError::New(env, "peer id must be 0..65535");
  if (id == s.self) throw Napi::RangeError::New(env, "use setOwn for the own eventfds");
  if (list.Length() == 0) throw Napi::RangeError::New(env, "a peer needs at least one eventfd");
  std::vector<int> dups;
  try {
    for (uint32_t v = 0; v < list.Length(); v++) dups.push_back(DupCloexec(env, list.Get(v).As<Napi::Number>().Int32Value()));
  } catch (...) {
    for (int fd : dups) close(fd);
    throw;
  }
  if (s.fds.size() <= id) s.fds.resize(static_cast<size_t>(id) + 1);
  s.ClosePeer(id);
  s.fds[id] = std::move(dups);
  if (s.words > 0 && id < s.words * 64) s.known[id >> 5] |= DoorbellState::Bit(id);
  return env.Undefined();
}

Napi::Value Doorbell::RemovePeer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DoorbellState& s = Live(env, state_);
  uint32_t id = info[0].As<Napi::Number>().Uint32Value();
  s.ClosePeer(id);
  if (s.words > 0 && id < s.words * 64) s.known[id >> 5] &= ~DoorbellState::Bit(id);
  return env.Undefined();
}

// setOwn(fds[]): own eventfds by vector (dups), drained by wake().
Napi::Value Doorbell::SetOwn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DoorbellState& s = Live(env, state_);
  Napi::Array list = info[0].As<Napi::Array>();
  std::vector<int> dups;
  try {
    for (uint32_t v = 0; v < list.Length(); v++) dups.push_back(DupCloexec(env, list.Get(v).As<Napi::Number>().Int32Value()));
  } catch (...) {
    for (int fd : dups) close(fd);
    throw;
  }
  for (int fd : s.own) close(fd);
  s.own = std::move(dups);
  return env.Undefined();
}

Napi::Value Doorbell::GetCounters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  DoorbellCounters c = state_ ? state_->counters : DoorbellCounters{};
  out.Set("rings", c.rings);
  out.Set("suppressed", c.suppressed);
  out.Set("signals", c.signals);
  out.Set("eventfdWrites", c.eventfdWrites);
  out.Set("eventfdReads", c.eventfdReads);
  out.Set("wakeups", c.wakeups);
  out.Set("spurious", c.spurious);
  out.Set("interrupts", c.interrupts);
  out.Set("acks", c.acks);
  return out;
}

Napi::Value Doorbell::ResetCounters(const Napi::CallbackInfo& info) {
  if (state_) state_->counters = DoorbellCounters{};
  return info.Env().Undefined();
}

Napi::Value Doorbell::Close(const Napi::CallbackInfo& info) {
  Release();
  return info.Env().Undefined();
}

}  // namespace ivshmem
