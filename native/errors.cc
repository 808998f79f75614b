#include "errors.h"

#include <uv.h>

#include <cctype>
#include <cstring>

namespace ivshmem {

namespace {

struct ErrnoText {
  std::string code;
  std::string message;
};

// libuv's names and messages are the ones Node prints ("ENOENT: no such file or directory"), so
// they come first. libuv names only the errnos it maps, though: for the rest (ETOOMANYREFS from
// sendmsg, ...) it says "Unknown system error -109", and glibc knows better.
ErrnoText Describe(int err) {
  char name[64];
  uv_err_name_r(-err, name, sizeof name);
  if (std::strncmp(name, "Unknown system error", 20) != 0) return {name, uv_strerror(-err)};
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  if (const char* glibcName = strerrorname_np(err)) {
    const char* desc = strerrordesc_np(err);
    std::string message = desc != nullptr ? desc : glibcName;
    // Lower-case first letter, as libuv's messages ("too many references: cannot splice").
    if (!message.empty()) {
      message[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(message[0])));
    }
    return {glibcName, message};
  }
#endif
  return {name, name};
}

}  // namespace

Napi::Error SystemError(Napi::Env env, int err, const char* syscall, const std::string& detail,
                        const std::string& path) {
  ErrnoText text = Describe(err);
  std::string message = text.code + ": " + text.message + ", " + syscall;
  if (!detail.empty()) message += " " + detail;
  Napi::Error error = Napi::Error::New(env, message);
  Napi::Object obj = error.Value();
  obj.Set("code", text.code);
  obj.Set("errno", -err);  // negative, like Node's fs and net errors
  obj.Set("syscall", syscall);
  if (!path.empty()) obj.Set("path", path);
  return error;
}

void ThrowSystemError(Napi::Env env, int err, const char* syscall, const std::string& detail,
                      const std::string& path) {
  throw SystemError(env, err, syscall, detail, path);
}

std::string FdDetail(int fd) { return "(fd " + std::to_string(fd) + ")"; }

std::string PathDetail(const std::string& path) { return "'" + path + "'"; }

}  // namespace ivshmem
