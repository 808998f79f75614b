#include "errors.h"

#include <uv.h>

#include <cstring>

namespace ivshmem {

Napi::Error SystemError(Napi::Env env, int err, const char* syscall, const std::string& detail,
                        const std::string& path) {
  // libuv's names and messages are the ones Node prints ("ENOENT: no such file or directory").
  const char* code = uv_err_name(-err);
  std::string message = std::string(code) + ": " + uv_strerror(-err) + ", " + syscall;
  if (!detail.empty()) message += " " + detail;
  Napi::Error error = Napi::Error::New(env, message);
  Napi::Object obj = error.Value();
  obj.Set("code", code);
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
