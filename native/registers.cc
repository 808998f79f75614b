#include "registers.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "errors.h"

namespace ivshmem {

static const napi_type_tag kRegistersTag = {0x697673686d726567ULL, 0x1ee7c0de00000007ULL};

void Registers::Init(Napi::Env env, Napi::Object exports, AddonData*) {
  Napi::Function ctor = DefineClass(env, "Registers",
                                    {
                                        InstanceMethod<&Registers::Read32>("read32"),
                                        InstanceMethod<&Registers::Write32>("write32"),
                                        InstanceAccessor<&Registers::GetClosed>("closed"),
                                        InstanceMethod<&Registers::Close>("close"),
                                    });
  exports.Set("Registers", ctor);
}

Registers::Registers(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Registers>(info), Resource(info.Env()) {
  Napi::Env env = info.Env();
  info.This().As<Napi::Object>().TypeTag(&kRegistersTag);
  std::string path = info[0].As<Napi::String>().Utf8Value();
  uint64_t skip = static_cast<uint64_t>(info[1].As<Napi::Number>().Int64Value());
  uint64_t size = static_cast<uint64_t>(info[2].As<Napi::Number>().Int64Value());
  if (size < 4) throw Napi::RangeError::New(env, "registers must be at least 4 bytes");
  int fd;
  do {
    // O_SYNC: the kernel maps a sysfs resource uncached only when asked (pci_mmap_resource).
    fd = open(path.c_str(), O_RDWR | O_SYNC | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) ThrowSystemError(env, errno, "open", PathDetail(path), path);
  try {
    // A regular file shorter than the registers would be SIGBUS at the first access beyond it.
    struct stat st;
    if (fstat(fd, &st) != 0) ThrowSystemError(env, errno, "fstat", PathDetail(path), path);
    if (S_ISREG(st.st_mode) && st.st_size != 0 && static_cast<uint64_t>(st.st_size) < size) {
      throw Napi::RangeError::New(env, PathDetail(path) + " is " + std::to_string(st.st_size) + " bytes, fewer than the " + std::to_string(size) + " bytes of registers");
    }
    mmio_ = Mmio::MapAt(env, fd, skip, size, PathDetail(path));
  } catch (...) {
    close(fd);
    Unregister();
    throw;
  }
  close(fd);  // the mapping keeps the file
}

Registers::~Registers() { Release(); }

void Registers::Release() {
  if (mmio_) {
    mmio_->Release();  // every holder (an interrupt table's doorbell) now fails with EBADF
    mmio_.reset();
  }
  Unregister();
}

void Registers::Teardown() { Release(); }

std::shared_ptr<Mmio> Registers::MmioOf(Napi::Value value) {
  if (!value.IsObject() || !value.As<Napi::Object>().CheckTypeTag(&kRegistersTag)) return nullptr;
  return Unwrap(value.As<Napi::Object>())->mmio_;
}

static const std::shared_ptr<Mmio>& Live(Napi::Env env, const std::shared_ptr<Mmio>& mmio) {
  if (!mmio) {
    Napi::Error e = Napi::Error::New(env, "the registers are closed");
    e.Set("code", "ERR_IVSHMEM_CLOSED");
    throw e;
  }
  return mmio;
}

Napi::Value ReadRegister(const Napi::CallbackInfo& info, const std::shared_ptr<Mmio>& mmio) {
  Napi::Env env = info.Env();
  const Mmio& m = *Live(env, mmio);
  uint32_t offset = info[0].As<Napi::Number>().Uint32Value();
  if (!m.InBounds(offset)) throw Napi::RangeError::New(env, "register offset outside the registers or not 4-byte aligned");
  uint32_t value;
  if (!m.Read32(offset, &value)) ThrowSystemError(env, errno, "pread", m.what);
  return Napi::Number::New(env, value);
}

Napi::Value WriteRegister(const Napi::CallbackInfo& info, const std::shared_ptr<Mmio>& mmio) {
  Napi::Env env = info.Env();
  const Mmio& m = *Live(env, mmio);
  uint32_t offset = info[0].As<Napi::Number>().Uint32Value();
  uint32_t value = info[1].As<Napi::Number>().Uint32Value();
  if (!m.InBounds(offset)) throw Napi::RangeError::New(env, "register offset outside the registers or not 4-byte aligned");
  if (!m.Write32(offset, value)) ThrowSystemError(env, errno, "pwrite", m.what);
  return env.Undefined();
}

Napi::Value Registers::Read32(const Napi::CallbackInfo& info) { return ReadRegister(info, mmio_); }
Napi::Value Registers::Write32(const Napi::CallbackInfo& info) { return WriteRegister(info, mmio_); }
Napi::Value Registers::GetClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !mmio_); }

Napi::Value Registers::Close(const Napi::CallbackInfo& info) {
  Release();
  return info.Env().Undefined();
}

}  // namespace ivshmem
