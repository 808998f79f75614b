// The 32-bit registers of a PCI BAR: one volatile load or store per access, so that the device
// (QEMU) sees exactly one 4-byte MMIO access, never one the compiler merged, split or moved.
// Through a mapping where the BAR can be mapped, otherwise pread/pwrite on the fd that exposes
// it. Shared (shared_ptr) by its owner and by an interrupt table that rings through a Doorbell
// register; released by the owner's close, after which every access fails with EBADF.
#pragma once
#include <napi.h>

#include <cstdint>
#include <memory>
#include <string>

namespace ivshmem {

struct Mmio {
  // Maps `length` bytes of fd at `offset`, or (when `map` is false) keeps a dup of fd for
  // pread/pwrite at that offset. Throws a system error naming `what`.
  static std::shared_ptr<Mmio> Open(Napi::Env env, int fd, uint64_t offset, uint64_t length, bool map, const std::string& what);
  // Maps the page-aligned start of fd and finds the registers `skip` bytes in (a sysfs
  // resource file of a BAR that does not start on a page: its mapping starts on the page).
  static std::shared_ptr<Mmio> MapAt(Napi::Env env, int fd, uint64_t skip, uint64_t length, const std::string& what);
  ~Mmio() { Release(); }

  // False with errno set (EBADF once released); the caller checked alignment and bounds.
  bool Read32(uint32_t offset, uint32_t* value) const;
  bool Write32(uint32_t offset, uint32_t value) const;
  bool InBounds(uint32_t offset) const { return offset % 4 == 0 && static_cast<uint64_t>(offset) + 4 <= size; }
  bool Mapped() const { return base != nullptr; }
  void Release();

  uint64_t size = 0;
  std::string what;

 private:
  volatile uint32_t* base = nullptr;
  void* mapping = nullptr;
  size_t mappingLength = 0;
  int fd = -1;
  uint64_t fdOffset = 0;
};

}  // namespace ivshmem
