// Errors that cross into JS shaped like Node's own system errors.
#pragma once
#include <napi.h>
#include <string>

namespace ivshmem {

// `detail` names the path or fd ("'/name'", "fd 7"); it ends up in the message and, for paths,
// as `error.path`.
Napi::Error SystemError(Napi::Env env, int err, const char* syscall, const std::string& detail = "",
                        const std::string& path = "");

// errno-style error for a condition that is not a failed syscall (e.g. MSG_CTRUNC).
[[noreturn]] void ThrowSystemError(Napi::Env env, int err, const char* syscall,
                                   const std::string& detail = "", const std::string& path = "");

std::string FdDetail(int fd);
std::string PathDetail(const std::string& path);

}  // namespace ivshmem
