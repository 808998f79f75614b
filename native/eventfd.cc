#include "eventfd.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>

#include "errors.h"

namespace ivshmem {

static const napi_type_tag kEventFdTag = {0x6976736d6576656eULL, 0x1ee7c0de00000002ULL};

void EventFd::Init(Napi::Env env, Napi::Object exports, AddonData* data) {
  Napi::Function ctor = DefineClass(env, "EventFd",
                                    {
                                        InstanceMethod<&EventFd::Signal>("signal"),
                                        InstanceMethod<&EventFd::Drain>("drain"),
                                        InstanceAccessor<&EventFd::GetFd>("fd"),
                                        InstanceMethod<&EventFd::Close>("close"),
                                    });
  data->eventFdCtor = Napi::Persistent(ctor);
  exports.Set("EventFd", ctor);
}

// An adopted fd must really be an eventfd: anything else would make signal()/drain() write or
// read 8 bytes of some unrelated file.
static bool IsEventFd(int fd) {
  char link[64];
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  ssize_t n = readlink(path.c_str(), link, sizeof(link) - 1);
  if (n < 0) return false;
  link[n] = '\0';
  return std::strcmp(link, "anon_inode:[eventfd]") == 0;
}

int AdoptEventFd(Napi::Env env, int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) ThrowSystemError(env, errno, "fcntl", FdDetail(fd));  // not open: not ours to close
  if (!IsEventFd(fd)) {
    close(fd);
    ThrowSystemError(env, EINVAL, "eventfd", FdDetail(fd) + " is not an eventfd");
  }
  // Readers must never block the event loop. O_NONBLOCK lives on the open file description that
  // the sender (QEMU, the server) shares with us; they set it too, so this changes nothing for them.
  if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    int err = errno;
    close(fd);
    ThrowSystemError(env, err, "fcntl", FdDetail(fd));
  }
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  return fd;
}

EventFd::EventFd(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EventFd>(info), Resource(info.Env()) {
  Napi::Env env = info.Env();
  info.This().As<Napi::Object>().TypeTag(&kEventFdTag);
  if (info[0].IsUndefined()) {
    fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd_ < 0) ThrowSystemError(env, errno, "eventfd");
    return;
  }
  fd_ = AdoptEventFd(env, info[0].As<Napi::Number>().Int32Value());
}

EventFd::~EventFd() { Release(); }

void EventFd::Release() {
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
  Unregister();
}

EventFd* EventFd::Unwrap(Napi::Value value) {
  if (!value.IsObject()) return nullptr;
  Napi::Object obj = value.As<Napi::Object>();
  if (!obj.CheckTypeTag(&kEventFdTag)) return nullptr;
  return Napi::ObjectWrap<EventFd>::Unwrap(obj);
}

Napi::Value EventFd::Signal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t n = info[0].IsUndefined() ? 1 : static_cast<uint64_t>(info[0].As<Napi::Number>().DoubleValue());
  ssize_t w;
  do {
    w = write(fd_, &n, sizeof n);
  } while (w < 0 && errno == EINTR);
  // EAGAIN: the counter would overflow (0xfffffffffffffffe); the receiver is not draining.
  if (w < 0) ThrowSystemError(env, errno, "write", FdDetail(fd_));
  return env.Undefined();
}

Napi::Value EventFd::Drain(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double total = 0;
  for (;;) {
    uint64_t value;
    ssize_t r = read(fd_, &value, sizeof value);
    if (r == sizeof value) {
      total += static_cast<double>(value);
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) break;
    ThrowSystemError(env, r < 0 ? errno : EIO, "read", FdDetail(fd_));
  }
  return Napi::Number::New(env, total);
}

Napi::Value EventFd::GetFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd_); }

Napi::Value EventFd::Close(const Napi::CallbackInfo& info) {
  Release();
  return info.Env().Undefined();
}

}  // namespace ivshmem
