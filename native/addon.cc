#include "addon.h"

#include <fcntl.h>
#include <unistd.h>


#include "interrupt_table.h"
#include "errors.h"
#include "eventfd.h"
#include "lease.h"
#include "mapping.h"
#include "registers.h"
#include "socket.h"
#include "vfio.h"
#include "watcher.h"

namespace ivshmem {

Resource::Resource(Napi::Env env) : data_(GetData(env)) { data_->Add(this); }

Resource::~Resource() { Unregister(); }

void Resource::Unregister() {
  if (registered_) {
    registered_ = false;
    data_->Remove(this);
  }
}

AddonData::AddonData(Napi::Env env) {
  napi_status status = napi_add_async_cleanup_hook(env, OnCleanup, this, &hook_);
  if (status != napi_ok) throw Napi::Error::New(env, "napi_add_async_cleanup_hook failed");
}

// A raw callback of the environment: no exception may leave it (std::terminate).
void AddonData::OnCleanup(napi_async_cleanup_hook_handle handle, void* arg) noexcept {
  auto* self = static_cast<AddonData*>(arg);
  self->hook_ = handle;
  self->tearingDown_ = true;
  // Teardown unregisters, so take them out one at a time (no copy to allocate); one that throws
  // is dropped from the set so that the others still go.
  while (!self->live_.empty()) {
    Resource* r = *self->live_.begin();
    try {
      r->Teardown();
    } catch (...) {
      // Its fd or mapping goes with the process; the environment must still end.
    }
    self->live_.erase(r);
  }
  if (self->closing_ == 0) {
    napi_remove_async_cleanup_hook(self->hook_);
    self->hook_ = nullptr;
  }
}

void AddonData::HandleClosed() {
  if (--closing_ == 0 && tearingDown_ && hook_ != nullptr) {
    napi_remove_async_cleanup_hook(hook_);
    hook_ = nullptr;
  }
}

AddonData* GetData(Napi::Env env) { return env.GetInstanceData<AddonData>(); }

namespace {

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  // Linux releases the fd even when close() reports EINTR: never retry.
  if (close(fd) != 0 && errno != EINTR) ThrowSystemError(env, errno, "close", FdDetail(fd));
  return env.Undefined();
}

Napi::Value DupFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) ThrowSystemError(env, errno, "dup", FdDetail(fd));
  return Napi::Number::New(env, copy);
}

// openSpareFd() -> an fd on /dev/null that holds a slot in the fd table, to be given up when
// the table is full (see lib/fd.ts).
Napi::Value OpenSpareFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  do {
    fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) ThrowSystemError(env, errno, "open", PathDetail("/dev/null"), "/dev/null");
  return Napi::Number::New(env, fd);
}

Napi::Value LiveResources(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(GetData(info.Env())->LiveCount()));
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData(env);
  env.SetInstanceData<AddonData>(data);
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
  exports.Set("dupFd", Napi::Function::New(env, DupFd, "dupFd"));
  exports.Set("openSpareFd", Napi::Function::New(env, OpenSpareFd, "openSpareFd"));
  exports.Set("liveResources", Napi::Function::New(env, LiveResources, "liveResources"));
  Mapping::Init(env, exports, data);
  EventFd::Init(env, exports, data);
  Watcher::Init(env, exports, data);
  Socket::Init(env, exports, data);
  InterruptTable::Init(env, exports, data);
  VfioDevice::Init(env, exports, data);
  Registers::Init(env, exports, data);
  Lease::Init(env, exports, data);
  return exports;
}

}  // namespace ivshmem

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return ivshmem::Init(env, exports); }
NODE_API_MODULE(ivshmem, InitAddon)
