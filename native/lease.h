// A lease kept by a thread of its own: every interval it advances one u32 in shared memory
// (never to 0), so that whoever reads the word sees this process alive even while its event loop
// is busy, and sees it stop the moment the process dies. Its own mapping of the one page that
// holds the word: it can never outlive or race the owner's mapping. Which word, and how often,
// is the TypeScript owner's (lib/sys/lease.ts).
#pragma once
#include <napi.h>

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

#include "addon.h"

namespace ivshmem {

class Lease : public Napi::ObjectWrap<Lease>, public Resource {
 public:
  static void Init(Napi::Env env, Napi::Object exports, AddonData* data);
  // new Lease(fd, pageOffset, wordOffset, intervalMs): maps the page at pageOffset of fd (a
  // multiple of the page size), renews the u32 at wordOffset in it at once and every intervalMs.
  explicit Lease(const Napi::CallbackInfo& info);
  ~Lease() override;
  void Teardown() override;

 private:
  Napi::Value Stop(const Napi::CallbackInfo& info);
  Napi::Value GetStopped(const Napi::CallbackInfo& info);
  // Stops the thread, clears the word when `clear`, unmaps.
  void Release(bool clear);
  void Run();

  void* page_ = nullptr;
  uint32_t* word_ = nullptr;
  uint32_t intervalMs_ = 100;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace ivshmem
