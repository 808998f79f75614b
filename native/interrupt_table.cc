#include "interrupt_table.h"

#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <exception>
#include <string>

#include "errors.h"
#include "eventfd.h"
#include "registers.h"
#include "vfio.h"

namespace ivshmem {

bool TableState::Signal(int fd) {
  uint64_t one = 1;
  ssize_t w;
  do {
    w = write(fd, &one, sizeof one);
  } while (w < 0 && errno == EINTR);
  counters.eventfdWrites++;
  return w == sizeof one;
}

void TableState::ClosePeer(uint32_t peer) {
  vectors[peer] = 0;
  if (peer >= fds.size()) return;
  for (int fd : fds[peer]) close(fd);
  fds[peer].clear();
}

void TableState::Unlist(uint32_t peer) {
  for (auto it = order.begin(); it != order.end(); ++it) {
    if (*it == peer) {
      order.erase(it);
      return;
    }
  }
}

void TableState::CloseAll() {
  for (uint32_t p = 0; p < fds.size(); p++) ClosePeer(p);
  for (uint32_t p : order) vectors[p] = 0;  // doorbell-mode peers hold no fds
  vectors[self] = 0;
  order.clear();
  doorbell.reset();
}

// ---- hot path: raw Node-API functions, `data` = TableState --------------------------------------

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
    napi_throw_error(env, nullptr, "unknown C++ exception in the interrupt table");
  }
  return nullptr;
}

static TableState* StateOf(napi_env env, napi_callback_info info, size_t* argc, napi_value* argv) {
  void* data = nullptr;
  napi_get_cb_info(env, info, argc, argv, nullptr, &data);
  auto* state = static_cast<std::shared_ptr<TableState>*>(data)->get();
  if (state->closed) {
    napi_throw_error(env, "ERR_IVSHMEM_CLOSED", "InterruptTable is closed");
    return nullptr;
  }
  return state;
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

// signal(dest, vector) -> true, or false if that peer has no eventfd for that vector. One
// eventfd write: a plain ring, or the signal of a bitmask edge (whose bit JS set, and takes back
// if this throws).
static napi_value SignalFn(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  TableState* s = StateOf(env, info, &argc, argv);
  if (s == nullptr) return nullptr;
  uint32_t dest, vector = 0;
  if (!ArgU32(env, argv[0], &dest, "dest")) return nullptr;
  if (argc > 1 && !ArgU32(env, argv[1], &vector, "vector")) return nullptr;
  napi_value out;
  if (s->doorbell) {
    bool known = dest < kPeerIds && vector < s->vectors[dest];
    if (known) {
      if (!s->doorbell->Write32(s->doorbellOffset, dest << 16 | vector)) {
        napi_throw(env, SystemError(Napi::Env(env), errno, "pwrite", s->doorbell->what).Value());
        return nullptr;
      }
      s->counters.doorbellWrites++;
    }
    napi_get_boolean(env, known, &out);
    return out;
  }
  int fd = s->FdOf(dest, vector);
  if (fd < 0) {
    napi_get_boolean(env, false, &out);
    return out;
  }
  if (!s->Signal(fd)) return ThrowErrno(env, errno, "write", fd);
  napi_get_boolean(env, true, &out);
  return out;
}

// wake(vector) -> the count drained from own eventfd `vector` (0: spurious). Called when the
// event loop reports it readable; drains first, as the protocol requires, before the caller acts.
static napi_value Wake(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  TableState* s = StateOf(env, info, &argc, argv);
  if (s == nullptr) return nullptr;
  uint32_t vector = 0;
  if (argc > 0 && !ArgU32(env, argv[0], &vector, "vector")) return nullptr;
  int fd = s->FdOf(s->self, vector);
  if (fd < 0) {
    napi_throw_range_error(env, nullptr, "no such own vector");
    return nullptr;
  }
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

void InterruptTable::Init(Napi::Env env, Napi::Object exports, AddonData*) {
  Napi::Function ctor = DefineClass(env, "InterruptTable",
                                    {
                                        InstanceMethod<&InterruptTable::Add>("add"),
                                        InstanceMethod<&InterruptTable::Remove>("remove"),
                                        InstanceMethod<&InterruptTable::Peers>("peers"),
                                        InstanceMethod<&InterruptTable::SetDoorbell>("setDoorbell"),
                                        InstanceMethod<&InterruptTable::SetVectors>("setVectors"),
                                        InstanceMethod<&InterruptTable::Close>("close"),
                                    });
  Napi::Array names = Napi::Array::New(env);
  uint32_t i = 0;
#define IVSHMEM_COUNTER_NAME(name) names.Set(i++, #name);
  IVSHMEM_INTERRUPT_COUNTERS(IVSHMEM_COUNTER_NAME)
#undef IVSHMEM_COUNTER_NAME
  static_assert(sizeof(InterruptCounters) % sizeof(double) == 0, "counters are doubles only");
  names.Freeze();
  ctor.Set("counterNames", names);
  exports.Set("InterruptTable", ctor);
}

// Finalizer of the functions (data) and of the external buffers (hint): drop that share.
static void DropState(napi_env, void* data, void* hint) {
  delete static_cast<std::shared_ptr<TableState>*>(hint != nullptr ? hint : data);
}

// An external ArrayBuffer over `bytes` of the state, holding its own share of it, so that JS can
// read (and the bitmask path count into) native memory without a crossing.
static Napi::Value ExternalOver(Napi::Env env, const std::shared_ptr<TableState>& state, void* bytes, size_t length) {
  auto* share = new std::shared_ptr<TableState>(state);
  napi_value out;
  if (napi_create_external_arraybuffer(env, bytes, length, DropState, share, &out) != napi_ok) {
    delete share;
    throw Napi::Error::New(env, "this runtime does not allow external ArrayBuffers");
  }
  return Napi::Value(env, out);
}

InterruptTable::InterruptTable(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<InterruptTable>(info), Resource(info.Env()) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) throw Napi::TypeError::New(env, "self must be a number");
  uint32_t self = info[0].As<Napi::Number>().Uint32Value();
  if (self >= kPeerIds) throw Napi::RangeError::New(env, "self must be 0..65535");
  state_ = std::make_shared<TableState>();
  state_->self = self;
  // The hot functions, each holding its own share of the state.
  Napi::Object object = info.This().As<Napi::Object>();
  struct Entry {
    const char* name;
    napi_callback cb;
  };
  for (Entry e : {Entry{"signal", Guarded<SignalFn>}, Entry{"wake", Guarded<Wake>}}) {
    auto* share = new std::shared_ptr<TableState>(state_);
    napi_value fn;
    if (napi_create_function(env, e.name, NAPI_AUTO_LENGTH, e.cb, share, &fn) != napi_ok ||
        napi_add_finalizer(env, fn, share, DropState, nullptr, nullptr) != napi_ok) {
      delete share;
      throw Napi::Error::New(env, "could not create the interrupt table's functions");
    }
    object.Set(e.name, Napi::Value(env, fn));
  }
  object.Set("countersBuffer", ExternalOver(env, state_, &state_->counters, sizeof(InterruptCounters)));
  object.Set("vectorsBuffer", ExternalOver(env, state_, state_->vectors, sizeof state_->vectors));
}

InterruptTable::~InterruptTable() { Release(); }

void InterruptTable::Release() {
  if (state_) {
    // The buffers keep the memory; a closed table holds no fds and knows no peer.
    state_->closed = true;
    state_->CloseAll();
    state_.reset();
  }
  Unregister();
}

void InterruptTable::Teardown() { Release(); }

static Napi::Error Closed(Napi::Env env) {
  Napi::Error e = Napi::Error::New(env, "InterruptTable is closed");
  e.Set("code", "ERR_IVSHMEM_CLOSED");
  return e;
}

// add(peer, fd) -> the vector index it became. Adopts fd, whatever happens: it is an eventfd the
// table now owns (the only copy: nobody else may close it), or it is closed and this throws.
Napi::Value InterruptTable::Add(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[1].As<Napi::Number>().Int32Value();
  auto refuse = [&](Napi::Error error) {
    if (fd >= 0) close(fd);
    throw error;
  };
  if (!state_ || state_->closed) refuse(Closed(env));
  TableState& s = *state_;
  double id = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
  if (!(id >= 0 && id < kPeerIds) || id != static_cast<double>(static_cast<uint32_t>(id))) {
    refuse(Napi::RangeError::New(env, "peer must be an integer 0..65535"));
  }
  uint32_t peer = static_cast<uint32_t>(id);
  if (s.doorbell && (peer != s.self || (s.vectors[peer] > 0 && (peer >= s.fds.size() || s.fds[peer].empty())))) {
    refuse(Napi::Error::New(env, "in doorbell mode only the own vectors are eventfds (and not after setVectors)"));
  }
  if (s.vectors[peer] == UINT16_MAX) refuse(Napi::RangeError::New(env, "too many vectors for one peer"));
  AdoptEventFd(env, fd);
  if (s.fds.size() <= peer) s.fds.resize(static_cast<size_t>(peer) + 1);
  if (s.fds[peer].empty() && peer != s.self) s.order.push_back(peer);
  s.fds[peer].push_back(fd);
  return Napi::Number::New(env, s.vectors[peer]++);
}

// remove(peer): closes every eventfd of a peer that left.
Napi::Value InterruptTable::Remove(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!state_) return env.Undefined();
  TableState& s = *state_;
  uint32_t peer = info[0].As<Napi::Number>().Uint32Value();
  if (peer == s.self) throw Napi::RangeError::New(env, "the own vectors go only with the table");
  if (peer >= kPeerIds || s.vectors[peer] == 0) return env.Undefined();
  s.ClosePeer(peer);
  s.Unlist(peer);
  return env.Undefined();
}

// peers() -> the other peers, in the order their first vector arrived.
Napi::Value InterruptTable::Peers(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env);
  if (!state_) return out;
  for (uint32_t i = 0; i < state_->order.size(); i++) out.Set(i, state_->order[i]);
  return out;
}

// setDoorbell(registers, offset): doorbell mode, once, before any peer is added. `registers` is
// a VfioDevice or a Registers; the table holds its own share of them.
Napi::Value InterruptTable::SetDoorbell(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!state_ || state_->closed) throw Closed(env);
  TableState& s = *state_;
  std::shared_ptr<Mmio> mmio = VfioDevice::MmioOf(info[0]);
  if (!mmio) mmio = Registers::MmioOf(info[0]);
  if (!mmio) throw Napi::TypeError::New(env, "registers must be a native VfioDevice or Registers that is open");
  uint32_t offset = info[1].As<Napi::Number>().Uint32Value();
  if (!mmio->InBounds(offset)) throw Napi::RangeError::New(env, "the Doorbell offset is outside the registers or unaligned");
  if (s.doorbell) throw Napi::Error::New(env, "the interrupt table rings through a Doorbell register already");
  if (!s.order.empty() || !s.fds.empty()) throw Napi::Error::New(env, "doorbell mode must be set before any peer is added");
  s.doorbell = std::move(mmio);
  s.doorbellOffset = offset;
  return env.Undefined();
}

// setVectors(peer, n): in doorbell mode, peer can be rung on vectors 0..n-1 (0: no longer).
// For peers without eventfds: the others, and the own ID when no own eventfds wake it.
Napi::Value InterruptTable::SetVectors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!state_ || state_->closed) throw Closed(env);
  TableState& s = *state_;
  if (!s.doorbell) throw Napi::Error::New(env, "setVectors is for doorbell mode only");
  uint32_t peer = info[0].As<Napi::Number>().Uint32Value();
  uint32_t n = info[1].As<Napi::Number>().Uint32Value();
  if (peer >= kPeerIds) throw Napi::RangeError::New(env, "peer must be 0..65535");
  if (n > UINT16_MAX) throw Napi::RangeError::New(env, "at most 65535 vectors");
  if (peer < s.fds.size() && !s.fds[peer].empty()) throw Napi::Error::New(env, "this peer's vectors are its eventfds");
  bool listed = s.vectors[peer] > 0;
  s.vectors[peer] = static_cast<uint16_t>(n);
  if (peer != s.self) {
    if (n > 0 && !listed) s.order.push_back(peer);
    if (n == 0 && listed) s.Unlist(peer);
  }
  return env.Undefined();
}

Napi::Value InterruptTable::Close(const Napi::CallbackInfo& info) {
  Release();
  return info.Env().Undefined();
}

}  // namespace ivshmem
