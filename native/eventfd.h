// A Linux eventfd (non-blocking, close-on-exec): signal() writes, drain() reads until EAGAIN.
#pragma once
#include <napi.h>

#include "addon.h"

namespace ivshmem {

// Takes ownership of `fd`, which must be an open eventfd, and makes it non-blocking and
// close-on-exec. Otherwise throws a system error, having closed `fd` if it was open.
int AdoptEventFd(Napi::Env env, int fd);

class EventFd : public Napi::ObjectWrap<EventFd>, public Resource {
 public:
  static void Init(Napi::Env env, Napi::Object exports, AddonData* data);
  // new EventFd() creates one; new EventFd(fd) adopts fd (ownership taken, closed on failure).
  explicit EventFd(const Napi::CallbackInfo& info);
  ~EventFd() override;
  void Teardown() override { Release(); }

  int Fd() const { return fd_; }
  static EventFd* Unwrap(Napi::Value value);

 private:
  Napi::Value Signal(const Napi::CallbackInfo& info);
  Napi::Value Drain(const Napi::CallbackInfo& info);
  Napi::Value GetFd(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  void Release();

  int fd_ = -1;
};

}  // namespace ivshmem
