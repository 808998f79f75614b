#include "lease.h"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include "errors.h"

namespace ivshmem {

static constexpr size_t kPage = 4096;

static void Renew(uint32_t* word) {
  uint32_t next = __atomic_load_n(word, __ATOMIC_SEQ_CST) + 1;
  __atomic_store_n(word, next == 0 ? 1 : next, __ATOMIC_SEQ_CST);
}

void Lease::Init(Napi::Env env, Napi::Object exports, AddonData*) {
  Napi::Function ctor = DefineClass(env, "Lease",
                                    {
                                        InstanceMethod<&Lease::Stop>("stop"),
                                        InstanceAccessor<&Lease::GetStopped>("stopped"),
                                    });
  exports.Set("Lease", ctor);
}

Lease::Lease(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Lease>(info), Resource(info.Env()) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  double pageOffset = info[1].As<Napi::Number>().DoubleValue();
  uint32_t wordOffset = info[2].As<Napi::Number>().Uint32Value();
  intervalMs_ = info[3].As<Napi::Number>().Uint32Value();
  if (wordOffset % 4 != 0 || wordOffset + 4 > kPage || static_cast<uint64_t>(pageOffset) % kPage != 0 || intervalMs_ == 0) {
    Unregister();
    throw Napi::RangeError::New(env, "a lease word is an aligned u32 inside one page at a page-aligned offset, renewed every >= 1 ms");
  }
  // A word past the end of a file or memfd would be SIGBUS at its first renewal: refuse it.
  // (Device fds, VFIO's, have no size to check.)
  struct stat st;
  if (fstat(fd, &st) != 0) {
    Unregister();
    ThrowSystemError(env, errno, "fstat", FdDetail(fd));
  }
  if (S_ISREG(st.st_mode) && static_cast<double>(st.st_size) < pageOffset + wordOffset + 4) {
    Unregister();
    throw Napi::RangeError::New(env, "the lease word is past the end of the object (" + std::to_string(st.st_size) + " bytes)");
  }
  page_ = mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(pageOffset));
  if (page_ == MAP_FAILED) {
    page_ = nullptr;
    Unregister();
    ThrowSystemError(env, errno, "mmap", FdDetail(fd));
  }
  word_ = reinterpret_cast<uint32_t*>(static_cast<uint8_t*>(page_) + wordOffset);
  Renew(word_);
  thread_ = std::thread([this] { Run(); });
  // Named before the constructor returns, so that it can be told apart at once (top -H, gdb,
  // /proc/PID/task/*/comm).
  pthread_setname_np(thread_.native_handle(), "ivshmem-lease");
}

void Lease::Run() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!wake_.wait_for(lock, std::chrono::milliseconds(intervalMs_), [this] { return stop_; })) Renew(word_);
}

Lease::~Lease() { Release(false); }

void Lease::Release(bool clear) {
  if (thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  if (page_ != nullptr) {
    if (clear) __atomic_store_n(word_, 0u, __ATOMIC_SEQ_CST);
    munmap(page_, kPage);
    page_ = nullptr;
    word_ = nullptr;
  }
  Unregister();
}

// At environment teardown the process may be exiting: leave the word as it is (the lease then
// expires, as for any death), only stop the thread and unmap.
void Lease::Teardown() { Release(false); }

// stop(): the thread stopped and joined, the word cleared (released: gone at once), unmapped.
Napi::Value Lease::Stop(const Napi::CallbackInfo& info) {
  Release(true);
  return info.Env().Undefined();
}

Napi::Value Lease::GetStopped(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), page_ == nullptr); }

}  // namespace ivshmem
