// Readiness of any fd (eventfd, socket) on the environment's own libuv loop, via uv_poll_t.
// Lifecycle as in Node's handle_wrap.cc: open, it holds its own JS object (nothing referencing
// it must not stop it); close() is idempotent; stop, uv_close, and the handle's memory is freed
// in the close callback.
#pragma once
#include <napi.h>
#include <uv.h>

#include <memory>

#include "addon.h"

namespace ivshmem {

class Watcher : public Napi::ObjectWrap<Watcher>, public Resource {
 public:
  static void Init(Napi::Env env, Napi::Object exports, AddonData* data);
  // new Watcher(fd, callback): the fd stays owned by the caller; callback(status, events) runs
  // on the loop when fd is ready (status 0, events = UV_READABLE/UV_WRITABLE bits) or polling
  // failed (status < 0, a libuv error).
  explicit Watcher(const Napi::CallbackInfo& info);
  ~Watcher() override;
  void Teardown() override;

 private:
  struct Handle {
    uv_poll_t poll;
    Watcher* owner;
    AddonData* data;
  };
  static void OnPoll(uv_poll_t* poll, int status, int events);
  static void OnClosed(uv_handle_t* handle);

  Napi::Value Start(const Napi::CallbackInfo& info);
  Napi::Value Stop(const Napi::CallbackInfo& info);
  Napi::Value Ref(const Napi::CallbackInfo& info);
  Napi::Value Unref(const Napi::CallbackInfo& info);
  Napi::Value HasRef(const Napi::CallbackInfo& info);
  Napi::Value GetActive(const Napi::CallbackInfo& info);
  Napi::Value GetClosed(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  void CloseHandle();
  void Dispatch(int status, int events) noexcept;
  void ReleaseCallback();

  Handle* handle_ = nullptr;
  int fd_ = -1;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> context_;
  bool dispatching_ = false;
  bool held_ = false;  // the strong reference to the own JS object, from open to close()
};

}  // namespace ivshmem
