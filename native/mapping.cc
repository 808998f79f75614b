#include "mapping.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "errors.h"

namespace ivshmem {

void Region::Unmap() {
  if (addr != nullptr) {
    munmap(addr, size);
    addr = nullptr;
  }
}

// The names of shared-memory objects and memfds; the fds they return are handed straight to
// `new Mapping(fd, size)`, which owns them from then on.
static Napi::Value ShmOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>().Utf8Value();
  int oflag = info[1].As<Napi::Number>().Int32Value();
  auto mode = static_cast<mode_t>(info[2].As<Napi::Number>().Uint32Value());
  int fd = shm_open(name.c_str(), oflag, mode);  // shm_open sets FD_CLOEXEC itself
  if (fd < 0) ThrowSystemError(env, errno, "shm_open", PathDetail(name), name);
  return Napi::Number::New(env, fd);
}

static Napi::Value ShmUnlink(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>().Utf8Value();
  if (shm_unlink(name.c_str()) != 0) ThrowSystemError(env, errno, "shm_unlink", PathDetail(name), name);
  return env.Undefined();
}

static Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>().Utf8Value();
  int fd = memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) ThrowSystemError(env, errno, "memfd_create", PathDetail(name));
  return Napi::Number::New(env, fd);
}

void Mapping::Init(Napi::Env env, Napi::Object exports, AddonData* data) {
  exports.Set("shmOpen", Napi::Function::New(env, ShmOpen, "shmOpen"));
  exports.Set("shmUnlink", Napi::Function::New(env, ShmUnlink, "shmUnlink"));
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate, "memfdCreate"));
  Napi::Object constants = Napi::Object::New(env);
  constants.Set("O_RDWR", O_RDWR);
  constants.Set("O_CREAT", O_CREAT);
  constants.Set("O_EXCL", O_EXCL);
  exports.Set("constants", constants);
  Napi::Function ctor = DefineClass(env, "Mapping",
                                    {
                                        InstanceAccessor<&Mapping::GetBuffer>("buffer"),
                                        InstanceAccessor<&Mapping::GetFd>("fd"),
                                        InstanceAccessor<&Mapping::GetSize>("size"),
                                        InstanceAccessor<&Mapping::GetClosed>("closed"),
                                        InstanceMethod<&Mapping::Close>("close"),
                                    });
  data->mappingCtor = Napi::Persistent(ctor);
  exports.Set("Mapping", ctor);
}

// Type tags make an unwrap of the wrong kind of object fail instead of misreading memory.
static const napi_type_tag kMappingTag = {0x6976736d6d617070ULL, 0x1ee7c0de00000001ULL};

static void FinalizeBuffer(napi_env, void*, void* hint) {
  delete static_cast<std::shared_ptr<Region>*>(hint);
}

Mapping::Mapping(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Mapping>(info), Resource(info.Env()) {
  Napi::Env env = info.Env();
  info.This().As<Napi::Object>().TypeTag(&kMappingTag);
  fd_ = info[0].As<Napi::Number>().Int32Value();
  try {
    // Inside the try: from here on the fd is ours, and closed if anything fails.
    double wanted = info[1].As<Napi::Number>().DoubleValue();
    struct stat st;
    if (fstat(fd_, &st) != 0) ThrowSystemError(env, errno, "fstat", FdDetail(fd_));
    // Only ever grow: shrinking an object that others have mapped kills them with SIGBUS.
    if (wanted > static_cast<double>(st.st_size)) {
      if (ftruncate(fd_, static_cast<off_t>(wanted)) != 0) ThrowSystemError(env, errno, "ftruncate", FdDetail(fd_));
      if (fstat(fd_, &st) != 0) ThrowSystemError(env, errno, "fstat", FdDetail(fd_));
    }
    if (st.st_size <= 0) {
      ThrowSystemError(env, EINVAL, "mmap", FdDetail(fd_) + ": the object is empty (size 0)");
    }
    auto size = static_cast<size_t>(st.st_size);
    void* addr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    if (addr == MAP_FAILED) ThrowSystemError(env, errno, "mmap", FdDetail(fd_));
    region_ = std::make_shared<Region>();
    region_->addr = addr;
    region_->size = size;

    auto* hint = new std::shared_ptr<Region>(region_);
    napi_value ab;
    napi_status status = napi_create_external_arraybuffer(env, addr, size, FinalizeBuffer, hint, &ab);
    if (status != napi_ok) {
      delete hint;
      // Electron's V8 sandbox refuses external buffers; a copy would not be shared memory.
      throw Napi::Error::New(env,
                             "this runtime does not allow external ArrayBuffers, so shared memory "
                             "cannot be exposed to JavaScript (Electron's V8 sandbox?)");
    }
    buffer_ = Napi::Persistent(Napi::ArrayBuffer(env, ab));
  } catch (...) {
    Release();
    throw;
  }
}

Mapping::~Mapping() { Release(); }

void Mapping::Release() {
  // Dropping our share only: the ArrayBuffer may still hold the region alive (see Region).
  region_.reset();
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
  Unregister();
}

void Mapping::Teardown() {
  // The environment is going away and no JS can run: unmap even if a buffer still points here.
  if (region_) region_->Unmap();
  buffer_.Reset();
  Release();
}

Mapping* Mapping::Unwrap(Napi::Value value) {
  if (!value.IsObject()) return nullptr;
  Napi::Object obj = value.As<Napi::Object>();
  if (!obj.CheckTypeTag(&kMappingTag)) return nullptr;
  return Napi::ObjectWrap<Mapping>::Unwrap(obj);
}

Napi::Value Mapping::Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!buffer_.IsEmpty()) {
    // Detach before unmapping: every view of the buffer becomes length 0 instead of dangling.
    Napi::ArrayBuffer ab = buffer_.Value();
    if (!ab.IsDetached()) ab.Detach();
    buffer_.Reset();
  }
  if (region_) region_->Unmap();
  Release();
  return env.Undefined();
}

Napi::Value Mapping::GetBuffer(const Napi::CallbackInfo& info) {
  if (buffer_.IsEmpty()) return info.Env().Null();
  return buffer_.Value();
}

Napi::Value Mapping::GetFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd_); }

Napi::Value Mapping::GetSize(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(Size()));
}

Napi::Value Mapping::GetClosed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), fd_ < 0 && !region_);
}

}  // namespace ivshmem
