#include "mmio.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

#include "errors.h"

namespace ivshmem {

std::shared_ptr<Mmio> Mmio::Open(Napi::Env env, int fd, uint64_t offset, uint64_t length, bool map, const std::string& what) {
  auto mmio = std::make_shared<Mmio>();
  mmio->size = length;
  mmio->what = what;
  if (map) {
    void* addr = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(offset));
    if (addr == MAP_FAILED) ThrowSystemError(env, errno, "mmap", what);
    mmio->mapping = addr;
    mmio->mappingLength = length;
    mmio->base = static_cast<volatile uint32_t*>(addr);
  } else {
    // Our own copy: the registers stay usable exactly as long as this object, whoever holds it.
    mmio->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (mmio->fd < 0) ThrowSystemError(env, errno, "fcntl", what);
    mmio->fdOffset = offset;
  }
  return mmio;
}

std::shared_ptr<Mmio> Mmio::MapAt(Napi::Env env, int fd, uint64_t skip, uint64_t length, const std::string& what) {
  auto mmio = std::make_shared<Mmio>();
  mmio->size = length;
  mmio->what = what;
  void* addr = mmap(nullptr, skip + length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (addr == MAP_FAILED) ThrowSystemError(env, errno, "mmap", what);
  mmio->mapping = addr;
  mmio->mappingLength = skip + length;
  mmio->base = reinterpret_cast<volatile uint32_t*>(static_cast<uint8_t*>(addr) + skip);
  return mmio;
}

bool Mmio::Read32(uint32_t offset, uint32_t* value) const {
  if (base != nullptr) {
    *value = base[offset / 4];
    return true;
  }
  if (fd < 0) {
    errno = EBADF;
    return false;
  }
  ssize_t n;
  do {
    n = pread(fd, value, 4, static_cast<off_t>(fdOffset + offset));
  } while (n < 0 && errno == EINTR);
  if (n == 4) return true;
  if (n >= 0) errno = EIO;
  return false;
}

bool Mmio::Write32(uint32_t offset, uint32_t value) const {
  if (base != nullptr) {
    base[offset / 4] = value;
    return true;
  }
  if (fd < 0) {
    errno = EBADF;
    return false;
  }
  ssize_t n;
  do {
    n = pwrite(fd, &value, 4, static_cast<off_t>(fdOffset + offset));
  } while (n < 0 && errno == EINTR);
  if (n == 4) return true;
  if (n >= 0) errno = EIO;
  return false;
}

void Mmio::Release() {
  if (mapping != nullptr) {
    munmap(mapping, mappingLength);
    mapping = nullptr;
    base = nullptr;
  }
  if (fd >= 0) {
    close(fd);
    fd = -1;
  }
}

}  // namespace ivshmem
