// A MAP_SHARED mapping of a whole fd (POSIX shm, memfd, or an fd received from elsewhere),
// shown to JS as external ArrayBuffers: the whole mapping where the runtime allows a buffer
// that long, and windows of it on request.
#pragma once
#include <napi.h>

#include <memory>
#include <vector>

#include "addon.h"

namespace ivshmem {

// The mapped bytes. Shared by the Mapping and the ArrayBuffers' finalizers, so the memory
// outlives whichever goes last, unless close() detached the buffers first.
struct Region {
  void* addr = nullptr;
  size_t size = 0;
  void Unmap();
  ~Region() { Unmap(); }
};

// An external ArrayBuffer over [offset, offset + length) of the region, holding it alive; a
// clear error where the runtime refuses external buffers (never a copy).
Napi::ArrayBuffer NewExternal(Napi::Env env, const std::shared_ptr<Region>& region, size_t offset, size_t length);

// The ArrayBuffers shown over one region: the whole one (where the runtime allows its length)
// and windows. Windows are held weakly: one the program dropped may be collected; one still
// alive is detached, like the whole one, before the region is unmapped.
class RegionBuffers {
 public:
  void SetWhole(Napi::ArrayBuffer ab) { whole_ = Napi::Persistent(ab); }
  // The whole buffer, or null when there is none (too long, or detached).
  Napi::Value Whole(Napi::Env env) const;
  // A new window over [offset, offset + length) of region; `what` names the region in the RangeError.
  Napi::ArrayBuffer Window(Napi::Env env, const std::shared_ptr<Region>& region, double offset, double length,
                           const char* what);
  void DetachAll();
  // Environment teardown (no JS may run): drop the references without detaching.
  void Forget();

 private:
  Napi::Reference<Napi::ArrayBuffer> whole_;
  std::vector<Napi::Reference<Napi::ArrayBuffer>> windows_;
  size_t pruneAt_ = 16;
};

class Mapping : public Napi::ObjectWrap<Mapping>, public Resource {
 public:
  static void Init(Napi::Env env, Napi::Object exports, AddonData* data);
  // new Mapping(fd, size, maxBuffer): takes ownership of fd (closed on failure too). An object
  // smaller than size is grown to it first (never shrunk); the mapping covers the object's
  // whole size. The whole-mapping buffer exists only if the size is at most maxBuffer (the
  // runtime's longest ArrayBuffer); windows reach the rest.
  explicit Mapping(const Napi::CallbackInfo& info);
  ~Mapping() override;
  void Teardown() override;

  // For the doorbell hot path: the base of the mapping, or null once closed.
  uint8_t* Base() const { return region_ ? static_cast<uint8_t*>(region_->addr) : nullptr; }
  size_t Size() const { return region_ ? region_->size : 0; }
  static Mapping* Unwrap(Napi::Value value);
  // The region itself, for native users that must notice a close (its addr becomes null).
  std::shared_ptr<Region> RegionPtr() const { return region_; }

 private:
  Napi::Value GetBuffer(const Napi::CallbackInfo& info);
  Napi::Value GetFd(const Napi::CallbackInfo& info);
  Napi::Value GetSize(const Napi::CallbackInfo& info);
  Napi::Value GetClosed(const Napi::CallbackInfo& info);
  Napi::Value Window(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  void Release();

  std::shared_ptr<Region> region_;
  int fd_ = -1;
  RegionBuffers buffers_;
};

}  // namespace ivshmem
