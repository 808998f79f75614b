// Per-environment state: constructors, the set of live native resources, and the cleanup hook
// that releases them when the environment (main thread or a worker) goes away.
#pragma once
#include <napi.h>

#include <unordered_set>

namespace ivshmem {

class AddonData;

// Anything that owns an fd, a mapping or a libuv handle. `Teardown()` releases it without
// calling into JS: it runs from the environment cleanup hook, when JS can no longer run.
class Resource {
 public:
  explicit Resource(Napi::Env env);
  virtual ~Resource();
  Resource(const Resource&) = delete;
  Resource& operator=(const Resource&) = delete;
  virtual void Teardown() = 0;

 protected:
  // Called once the resource holds nothing any more (explicit close, teardown, or finalizer).
  void Unregister();
  AddonData* data_;

 private:
  bool registered_ = true;
};

class AddonData {
 public:
  explicit AddonData(Napi::Env env);
  Napi::FunctionReference mappingCtor;
  Napi::FunctionReference eventFdCtor;
  Napi::FunctionReference watcherCtor;
  Napi::FunctionReference socketCtor;
  Napi::FunctionReference vfioDeviceCtor;

  void Add(Resource* r) { live_.insert(r); }
  void Remove(Resource* r) { live_.erase(r); }
  size_t LiveCount() const { return live_.size(); }

  // A libuv handle closing asynchronously during teardown holds the environment open until its
  // close callback has run (napi_add_async_cleanup_hook).
  void HandleClosing() { ++closing_; }
  void HandleClosed();

 private:
  static void OnCleanup(napi_async_cleanup_hook_handle handle, void* arg) noexcept;
  std::unordered_set<Resource*> live_;
  napi_async_cleanup_hook_handle hook_ = nullptr;
  bool tearingDown_ = false;
  int closing_ = 0;
};

AddonData* GetData(Napi::Env env);

}  // namespace ivshmem
