#include "mapping.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <string>

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

// fdStat(fd) -> { size, seals }: what a receiver checks before mapping an fd it was given.
// seals is -1 for objects that cannot carry seals (POSIX shm, plain files).
static Napi::Value FdStat(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  struct stat st;
  if (fstat(fd, &st) != 0) ThrowSystemError(env, errno, "fstat", FdDetail(fd));
  int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0 && errno != EINVAL) ThrowSystemError(env, errno, "fcntl", FdDetail(fd) + ": F_GET_SEALS");
  Napi::Object out = Napi::Object::New(env);
  out.Set("size", static_cast<double>(st.st_size));
  out.Set("seals", seals < 0 ? -1 : seals);
  return out;
}

// addSeals(fd, seals): fcntl(F_ADD_SEALS); EPERM once F_SEAL_SEAL is set, EINVAL for non-memfds.
static Napi::Value AddSeals(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  int seals = info[1].As<Napi::Number>().Int32Value();
  if (fcntl(fd, F_ADD_SEALS, seals) != 0) ThrowSystemError(env, errno, "fcntl", FdDetail(fd) + ": F_ADD_SEALS");
  return env.Undefined();
}

// growFd(fd, size) -> the size before: ftruncate up to size if the object is smaller (never down).
static Napi::Value GrowFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  auto size = static_cast<off_t>(info[1].As<Napi::Number>().DoubleValue());
  struct stat st;
  if (fstat(fd, &st) != 0) ThrowSystemError(env, errno, "fstat", FdDetail(fd));
  if (st.st_size < size && ftruncate(fd, size) != 0) ThrowSystemError(env, errno, "ftruncate", FdDetail(fd));
  return Napi::Number::New(env, static_cast<double>(st.st_size));
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
  exports.Set("fdStat", Napi::Function::New(env, FdStat, "fdStat"));
  exports.Set("addSeals", Napi::Function::New(env, AddSeals, "addSeals"));
  exports.Set("growFd", Napi::Function::New(env, GrowFd, "growFd"));
  Napi::Object constants = Napi::Object::New(env);
  constants.Set("O_RDWR", O_RDWR);
  constants.Set("O_CREAT", O_CREAT);
  constants.Set("O_EXCL", O_EXCL);
  constants.Set("F_SEAL_SEAL", F_SEAL_SEAL);
  constants.Set("F_SEAL_SHRINK", F_SEAL_SHRINK);
  constants.Set("F_SEAL_GROW", F_SEAL_GROW);
  constants.Set("F_SEAL_WRITE", F_SEAL_WRITE);
  constants.Set("F_SEAL_FUTURE_WRITE", F_SEAL_FUTURE_WRITE);
  exports.Set("constants", constants);
  Napi::Function ctor = DefineClass(env, "Mapping",
                                    {
                                        InstanceAccessor<&Mapping::GetBuffer>("buffer"),
                                        InstanceAccessor<&Mapping::GetFd>("fd"),
                                        InstanceAccessor<&Mapping::GetSize>("size"),
                                        InstanceAccessor<&Mapping::GetClosed>("closed"),
                                        InstanceMethod<&Mapping::Window>("window"),
                                        InstanceMethod<&Mapping::Close>("close"),
                                    });
  data->mappingCtor = Napi::Persistent(ctor);
  exports.Set("Mapping", ctor);
}

// Type tags make an unwrap of the wrong kind of object fail instead of misreading memory.
static const napi_type_tag kMappingTag = {0x6976736d6d617070ULL, 0x1ee7c0de00000001ULL};

// Node 20 builds external ArrayBuffers on node::Buffer, which refuses more than
// buffer.constants.MAX_LENGTH bytes and then runs the finalizer itself before returning: the
// hint must not be freed a second time. (Freeing it twice was the SIGSEGV of regions > 4 GiB.)
static thread_local void* creatingHint = nullptr;
static thread_local bool finalizedWhileCreating = false;

static void FinalizeBuffer(napi_env, void*, void* hint) {
  if (hint == creatingHint) finalizedWhileCreating = true;
  delete static_cast<std::shared_ptr<Region>*>(hint);
}

// An external ArrayBuffer over [offset, offset + length) of the region, holding it alive.
Napi::ArrayBuffer NewExternal(Napi::Env env, const std::shared_ptr<Region>& region, size_t offset,
                                     size_t length) {
  auto* hint = new std::shared_ptr<Region>(region);
  creatingHint = hint;
  finalizedWhileCreating = false;
  napi_value ab;
  napi_status status = napi_create_external_arraybuffer(env, static_cast<uint8_t*>(region->addr) + offset, length,
                                                        FinalizeBuffer, hint, &ab);
  creatingHint = nullptr;
  if (status == napi_ok) return Napi::ArrayBuffer(env, ab);
  // A finalizer that did not run yet may still run later: leave it the (emptied) hint.
  if (!finalizedWhileCreating) hint->reset();
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (pending) {
    napi_value ignored;
    napi_get_and_clear_last_exception(env, &ignored);
  }
  // Electron's V8 sandbox refuses external buffers; a copy would not be shared memory.
  throw Napi::Error::New(env, "this runtime refused an external ArrayBuffer of " + std::to_string(length) +
                                  " bytes, so the shared memory cannot be shown to JavaScript (too long for "
                                  "this runtime, or Electron's V8 sandbox?)");
}

Mapping::Mapping(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Mapping>(info), Resource(info.Env()) {
  Napi::Env env = info.Env();
  info.This().As<Napi::Object>().TypeTag(&kMappingTag);
  fd_ = info[0].As<Napi::Number>().Int32Value();
  try {
    // Inside the try: from here on the fd is ours, and closed if anything fails.
    double wanted = info[1].As<Napi::Number>().DoubleValue();
    double maxBuffer = info[2].As<Napi::Number>().DoubleValue();
    struct stat st;
    if (fstat(fd_, &st) != 0) ThrowSystemError(env, errno, "fstat", FdDetail(fd_));
    // Only ever grow: shrinking an object that others have mapped kills them with SIGBUS.
    if (wanted > static_cast<double>(st.st_size)) {
      if (ftruncate(fd_, static_cast<off_t>(wanted)) != 0) ThrowSystemError(env, errno, "ftruncate", FdDetail(fd_));
      if (fstat(fd_, &st) != 0) ThrowSystemError(env, errno, "fstat", FdDetail(fd_));
    }
    if (st.st_size <= 0) {
      ThrowSystemError(env, EINVAL, "mmap",
                       FdDetail(fd_) + ": the object is empty (size 0; truncated by someone else who holds it?)");
    }
    auto size = static_cast<size_t>(st.st_size);
    void* addr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    if (addr == MAP_FAILED) ThrowSystemError(env, errno, "mmap", FdDetail(fd_));
    region_ = std::make_shared<Region>();
    region_->addr = addr;
    region_->size = size;
    if (static_cast<double>(size) <= maxBuffer) buffers_.SetWhole(NewExternal(env, region_, 0, size));
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
  buffers_.Forget();
  Release();
}

Mapping* Mapping::Unwrap(Napi::Value value) {
  if (!value.IsObject()) return nullptr;
  Napi::Object obj = value.As<Napi::Object>();
  if (!obj.CheckTypeTag(&kMappingTag)) return nullptr;
  return Napi::ObjectWrap<Mapping>::Unwrap(obj);
}

static void DetachIfAlive(Napi::Reference<Napi::ArrayBuffer>& ref) {
  if (ref.IsEmpty()) return;
  Napi::ArrayBuffer ab = ref.Value();
  if (!ab.IsEmpty() && !ab.IsDetached()) ab.Detach();
  ref.Reset();
}

Napi::Value RegionBuffers::Whole(Napi::Env env) const {
  if (whole_.IsEmpty()) return env.Null();
  return whole_.Value();
}

// The bounds are checked in JS against the runtime's limit; these checks only keep a bad call
// from reading astray.
Napi::ArrayBuffer RegionBuffers::Window(Napi::Env env, const std::shared_ptr<Region>& region, double offset,
                                        double length, const char* what) {
  if (!(offset >= 0 && length >= 0 && offset + length <= static_cast<double>(region->size))) {
    throw Napi::RangeError::New(env, std::string("window outside ") + what);
  }
  Napi::ArrayBuffer ab = NewExternal(env, region, static_cast<size_t>(offset), static_cast<size_t>(length));
  if (windows_.size() >= pruneAt_) {
    // Forget windows already collected, so a program making many stays bounded.
    std::vector<Napi::Reference<Napi::ArrayBuffer>> alive;
    for (auto& window : windows_) {
      if (!window.Value().IsEmpty()) alive.push_back(std::move(window));
    }
    windows_ = std::move(alive);
    pruneAt_ = std::max<size_t>(16, windows_.size() * 2);
  }
  windows_.push_back(Napi::Weak(ab));
  return ab;
}

void RegionBuffers::DetachAll() {
  DetachIfAlive(whole_);
  for (auto& window : windows_) DetachIfAlive(window);
  windows_.clear();
}

void RegionBuffers::Forget() {
  whole_.Reset();
  windows_.clear();
}

// window(offset, length) -> a new ArrayBuffer over that part of the mapping.
Napi::Value Mapping::Window(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!region_ || region_->addr == nullptr) throw Napi::Error::New(env, "the mapping is closed");
  return buffers_.Window(env, region_, info[0].As<Napi::Number>().DoubleValue(), info[1].As<Napi::Number>().DoubleValue(),
                         "the mapping");
}

Napi::Value Mapping::Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  // Detach before unmapping: every view of every buffer becomes length 0 instead of dangling.
  buffers_.DetachAll();
  if (region_) region_->Unmap();
  Release();
  return env.Undefined();
}

Napi::Value Mapping::GetBuffer(const Napi::CallbackInfo& info) {
  return buffers_.Whole(info.Env());
}

Napi::Value Mapping::GetFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd_); }

Napi::Value Mapping::GetSize(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(Size()));
}

Napi::Value Mapping::GetClosed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), fd_ < 0 && !region_);
}

}  // namespace ivshmem
