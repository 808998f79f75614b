// AF_UNIX SOCK_STREAM sockets (non-blocking, close-on-exec) that carry QEMU's framing: 8-byte
// messages, each with at most one fd (SCM_RIGHTS). No protocol knowledge beyond the framing.
#pragma once
#include <napi.h>

#include "addon.h"

namespace ivshmem {

class Socket : public Napi::ObjectWrap<Socket>, public Resource {
 public:
  static constexpr size_t kMessageSize = 8;
  // recv() results that are not an fd.
  static constexpr int kNoFd = -1;
  static constexpr int kAgain = -2;
  static constexpr int kEof = -3;

  static void Init(Napi::Env env, Napi::Object exports, AddonData* data);
  // new Socket(fd): adopts a connected or listening socket fd.
  explicit Socket(const Napi::CallbackInfo& info);
  ~Socket() override;
  void Teardown() override { Release(); }

 private:
  static Napi::Value Listen(const Napi::CallbackInfo& info);
  static Napi::Value Connect(const Napi::CallbackInfo& info);
  Napi::Value Accept(const Napi::CallbackInfo& info);
  Napi::Value Send(const Napi::CallbackInfo& info);
  Napi::Value Recv(const Napi::CallbackInfo& info);
  Napi::Value Shutdown(const Napi::CallbackInfo& info);
  Napi::Value SetSendBuffer(const Napi::CallbackInfo& info);
  Napi::Value GetFd(const Napi::CallbackInfo& info);
  Napi::Value GetPending(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  void Release();
  void DropPendingFd();

  int fd_ = -1;
  // A message may arrive in pieces; its fd comes with whichever piece carried it.
  uint8_t partial_[kMessageSize] = {};
  size_t have_ = 0;
  int pendingFd_ = -1;
};

}  // namespace ivshmem
