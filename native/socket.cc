#include "socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "errors.h"

namespace ivshmem {

// Room for a few fds so that a sender attaching too many is detected (and its extras closed)
// rather than silently truncated.
static constexpr int kMaxFdsPerMessage = 8;

void Socket::Init(Napi::Env env, Napi::Object exports, AddonData* data) {
  Napi::Function ctor = DefineClass(env, "Socket",
                                    {
                                        StaticMethod<&Socket::Listen>("listen"),
                                        StaticMethod<&Socket::Connect>("connect"),
                                        InstanceMethod<&Socket::Accept>("accept"),
                                        InstanceMethod<&Socket::Send>("send"),
                                        InstanceMethod<&Socket::Recv>("recv"),
                                        InstanceMethod<&Socket::Shutdown>("shutdown"),
                                        InstanceMethod<&Socket::SetSendBuffer>("setSendBuffer"),
                                        InstanceAccessor<&Socket::GetFd>("fd"),
                                        InstanceAccessor<&Socket::GetPending>("pending"),
                                        InstanceMethod<&Socket::Close>("close"),
                                        StaticValue("AGAIN", Napi::Number::New(env, kAgain)),
                                        StaticValue("EOF", Napi::Number::New(env, kEof)),
                                        StaticValue("NO_FD", Napi::Number::New(env, kNoFd)),
                                    });
  data->socketCtor = Napi::Persistent(ctor);
  exports.Set("Socket", ctor);
}

Socket::Socket(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Socket>(info), Resource(info.Env()) {
  fd_ = info[0].As<Napi::Number>().Int32Value();
}

Socket::~Socket() { Release(); }

void Socket::DropPendingFd() {
  if (pendingFd_ >= 0) {
    close(pendingFd_);
    pendingFd_ = -1;
  }
}

void Socket::Release() {
  DropPendingFd();
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
  Unregister();
}

static sockaddr_un MakeAddress(Napi::Env env, const std::string& path, const char* syscall) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    ThrowSystemError(env, path.empty() ? ENOENT : ENAMETOOLONG, syscall, PathDetail(path), path);
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

static int NewSocket(Napi::Env env) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowSystemError(env, errno, "socket");
  return fd;
}

static Napi::Value Wrap(Napi::Env env, int fd) {
  return GetData(env)->socketCtor.New({Napi::Number::New(env, fd)});
}

// Socket.listen(path, mode, backlog)
Napi::Value Socket::Listen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  auto mode = static_cast<mode_t>(info[1].As<Napi::Number>().Uint32Value());
  int backlog = info[2].As<Napi::Number>().Int32Value();
  sockaddr_un addr = MakeAddress(env, path, "bind");
  int fd = NewSocket(env);
  // On Linux bind() creates the file with the socket inode's mode: set it first so the path is
  // never reachable with wider permissions, then chmod after bind in case the umask narrowed it.
  fchmod(fd, mode);
  const char* failed = nullptr;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    failed = "bind";
  } else if (chmod(path.c_str(), mode) != 0) {
    failed = "chmod";
  } else if (listen(fd, backlog) != 0) {
    failed = "listen";
  }
  if (failed != nullptr) {
    int err = errno;
    close(fd);
    if (std::strcmp(failed, "bind") != 0) unlink(path.c_str());
    ThrowSystemError(env, err, failed, PathDetail(path), path);
  }
  return Wrap(env, fd);
}

// Socket.connect(path). A full backlog is EAGAIN (AF_UNIX connect never completes later).
Napi::Value Socket::Connect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  sockaddr_un addr = MakeAddress(env, path, "connect");
  int fd = NewSocket(env);
  int rc;
  do {
    rc = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    int err = errno;
    close(fd);
    ThrowSystemError(env, err, "connect", PathDetail(path), path);
  }
  return Wrap(env, fd);
}

// accept() -> Socket, or null when no connection is waiting.
Napi::Value Socket::Accept(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  do {
    fd = accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    if (errno == EAGAIN || errno == ECONNABORTED) return env.Null();
    ThrowSystemError(env, errno, "accept", FdDetail(fd_));
  }
  return Wrap(env, fd);
}

// send(bytes: 8-byte Uint8Array, fd = -1) -> true, or false when the socket buffer is full.
// MSG_NOSIGNAL: a vanished peer is an EPIPE error for the caller, never a SIGPIPE.
Napi::Value Socket::Send(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Uint8Array bytes = info[0].As<Napi::Uint8Array>();
  if (bytes.ByteLength() != kMessageSize) {
    throw Napi::RangeError::New(env, "a message is exactly 8 bytes");
  }
  int passFd = info[1].IsUndefined() ? -1 : info[1].As<Napi::Number>().Int32Value();
  iovec iov{bytes.Data(), kMessageSize};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  if (passFd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(cmsg), &passFd, sizeof(int));
  }
  ssize_t n;
  do {
    n = sendmsg(fd_, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN) return Napi::Boolean::New(env, false);
    ThrowSystemError(env, errno, "sendmsg", FdDetail(fd_));
  }
  // An AF_UNIX stream socket queues a message this small whole or not at all.
  if (static_cast<size_t>(n) != kMessageSize) ThrowSystemError(env, EIO, "sendmsg", FdDetail(fd_) + ": short write");
  return Napi::Boolean::New(env, true);
}

// recv(out: 8-byte Uint8Array) -> the fd that came with the message (caller owns it), NO_FD,
// AGAIN (nothing complete yet), or EOF (peer closed; `pending` tells how many bytes of an
// unfinished message were left).
Napi::Value Socket::Recv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Uint8Array out = info[0].As<Napi::Uint8Array>();
  if (out.ByteLength() != kMessageSize) throw Napi::RangeError::New(env, "a message is exactly 8 bytes");
  while (have_ < kMessageSize) {
    iovec iov{partial_ + have_, kMessageSize - have_};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n;
    do {
      n = recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      if (errno == EAGAIN) return Napi::Number::New(env, kAgain);
      ThrowSystemError(env, errno, "recvmsg", FdDetail(fd_));
    }
    // Collect every fd that arrived, whatever happens next, so none can leak.
    std::vector<int> fds;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; i++) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        fds.push_back(fd);
      }
    }
    if (msg.msg_flags & MSG_CTRUNC) {
      for (int fd : fds) close(fd);
      // Keep the bytes: the stream stays framed in 8-byte messages after the error.
      have_ += static_cast<size_t>(n);
      ThrowSystemError(env, EMSGSIZE, "recvmsg",
                       FdDetail(fd_) + ": ancillary data truncated (more fds than a message may carry)");
    }
    for (int fd : fds) {
      if (pendingFd_ < 0) {
        pendingFd_ = fd;
      } else {
        close(fd);  // one fd per message; anything beyond that is the sender's mistake
      }
    }
    if (n == 0) return Napi::Number::New(env, kEof);
    have_ += static_cast<size_t>(n);
  }
  std::memcpy(out.Data(), partial_, kMessageSize);
  have_ = 0;
  int fd = pendingFd_;
  pendingFd_ = -1;
  return Napi::Number::New(env, fd >= 0 ? fd : kNoFd);
}

Napi::Value Socket::Shutdown(const Napi::CallbackInfo& info) {
  if (fd_ >= 0) shutdown(fd_, SHUT_RDWR);
  return info.Env().Undefined();
}

// setSendBuffer(bytes): SO_SNDBUF (Linux doubles it, and has a floor of about 4.5 KiB).
Napi::Value Socket::SetSendBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int bytes = info[0].As<Napi::Number>().Int32Value();
  if (setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes) != 0) {
    ThrowSystemError(env, errno, "setsockopt", FdDetail(fd_) + ": SO_SNDBUF");
  }
  return env.Undefined();
}

Napi::Value Socket::GetFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd_); }

Napi::Value Socket::GetPending(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(have_));
}

Napi::Value Socket::Close(const Napi::CallbackInfo& info) {
  Release();
  return info.Env().Undefined();
}

}  // namespace ivshmem
