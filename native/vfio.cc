#include "vfio.h"

#include <fcntl.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "errors.h"
#include "registers.h"

namespace ivshmem {

static const napi_type_tag kVfioDeviceTag = {0x697673686d766669ULL, 0x1ee7c0de00000006ULL};
static constexpr const char* kContainerPath = "/dev/vfio/vfio";

// "'/dev/vfio/3': VFIO_GROUP_GET_STATUS": the path and the request, in the message.
static std::string Detail(const std::string& path, const char* request) { return PathDetail(path) + ": " + request; }

void VfioDevice::Init(Napi::Env env, Napi::Object exports, AddonData* data) {
  Napi::Function ctor = DefineClass(env, "VfioDevice",
                                    {
                                        InstanceMethod<&VfioDevice::Read32>("read32"),
                                        InstanceMethod<&VfioDevice::Write32>("write32"),
                                        InstanceMethod<&VfioDevice::ConfigRead>("configRead"),
                                        InstanceMethod<&VfioDevice::ConfigWrite>("configWrite"),
                                        InstanceMethod<&VfioDevice::SetIrqs>("setIrqs"),
                                        InstanceMethod<&VfioDevice::DisableIrqs>("disableIrqs"),
                                        InstanceAccessor<&VfioDevice::GetBuffer>("buffer"),
                                        InstanceMethod<&VfioDevice::Window>("window"),
                                        InstanceAccessor<&VfioDevice::GetInfo>("info"),
                                        InstanceAccessor<&VfioDevice::GetClosed>("closed"),
                                        InstanceAccessor<&VfioDevice::GetFd>("fd"),
                                        InstanceMethod<&VfioDevice::Close>("close"),
                                    });
  data->vfioDeviceCtor = Napi::Persistent(ctor);
  exports.Set("VfioDevice", ctor);
}

static int OpenRw(Napi::Env env, const std::string& path) {
  int fd;
  do {
    fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) ThrowSystemError(env, errno, "open", PathDetail(path), path);
  return fd;
}

VfioRegion VfioDevice::RegionInfo(Napi::Env env, uint32_t index) {
  struct vfio_region_info reg;
  std::memset(&reg, 0, sizeof reg);
  reg.argsz = sizeof reg;
  reg.index = index;
  if (ioctl(device_, VFIO_DEVICE_GET_REGION_INFO, &reg) != 0) {
    ThrowSystemError(env, errno, "ioctl", Detail(address_, "VFIO_DEVICE_GET_REGION_INFO") + " region " + std::to_string(index), address_);
  }
  return {reg.size, reg.offset, reg.flags};
}

VfioDevice::VfioDevice(const Napi::CallbackInfo& info) : Napi::ObjectWrap<VfioDevice>(info), Resource(info.Env()) {
  Napi::Env env = info.Env();
  info.This().As<Napi::Object>().TypeTag(&kVfioDeviceTag);
  groupPath_ = info[0].As<Napi::String>().Utf8Value();
  address_ = info[1].As<Napi::String>().Utf8Value();
  double maxBuffer = info[2].As<Napi::Number>().DoubleValue();
  try {
    container_ = OpenRw(env, kContainerPath);
    int version = ioctl(container_, VFIO_GET_API_VERSION);
    if (version != VFIO_API_VERSION) {
      ThrowSystemError(env, version < 0 ? errno : EINVAL, "ioctl",
                       Detail(kContainerPath, "VFIO_GET_API_VERSION") + " is " + std::to_string(version) + ", expected " +
                           std::to_string(VFIO_API_VERSION),
                       kContainerPath);
    }
    int type1 = ioctl(container_, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU);
    if (type1 <= 0) {
      ThrowSystemError(env, type1 < 0 ? errno : ENOTSUP, "ioctl",
                       Detail(kContainerPath, "VFIO_CHECK_EXTENSION") + ": no type-1 IOMMU", kContainerPath);
    }
    group_ = OpenRw(env, groupPath_);
    struct vfio_group_status status;
    std::memset(&status, 0, sizeof status);
    status.argsz = sizeof status;
    if (ioctl(group_, VFIO_GROUP_GET_STATUS, &status) != 0) {
      ThrowSystemError(env, errno, "ioctl", Detail(groupPath_, "VFIO_GROUP_GET_STATUS"), groupPath_);
    }
    if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE)) {
      Napi::Error error = SystemError(env, EBUSY, "ioctl",
                                      Detail(groupPath_, "VFIO_GROUP_GET_STATUS") +
                                          ": the group is not viable (a device in it is bound to a driver other than vfio-pci)",
                                      groupPath_);
      error.Value().Set("reason", "not-viable");
      throw error;
    }
    if (ioctl(group_, VFIO_GROUP_SET_CONTAINER, &container_) != 0) {
      ThrowSystemError(env, errno, "ioctl", Detail(groupPath_, "VFIO_GROUP_SET_CONTAINER"), groupPath_);
    }
    if (ioctl(container_, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU) != 0) {
      ThrowSystemError(env, errno, "ioctl", Detail(kContainerPath, "VFIO_SET_IOMMU"), kContainerPath);
    }
    device_ = ioctl(group_, VFIO_GROUP_GET_DEVICE_FD, address_.c_str());  // O_CLOEXEC (guest.md, pitfall 2)
    if (device_ < 0) {
      ThrowSystemError(env, errno, "ioctl", Detail(groupPath_, "VFIO_GROUP_GET_DEVICE_FD") + " " + address_, groupPath_);
    }
    bar0_ = RegionInfo(env, VFIO_PCI_BAR0_REGION_INDEX);
    bar2_ = RegionInfo(env, VFIO_PCI_BAR2_REGION_INDEX);
    config_ = RegionInfo(env, VFIO_PCI_CONFIG_REGION_INDEX);
    struct vfio_irq_info irq;
    std::memset(&irq, 0, sizeof irq);
    irq.argsz = sizeof irq;
    irq.index = VFIO_PCI_MSIX_IRQ_INDEX;
    if (ioctl(device_, VFIO_DEVICE_GET_IRQ_INFO, &irq) != 0) {
      ThrowSystemError(env, errno, "ioctl", Detail(address_, "VFIO_DEVICE_GET_IRQ_INFO") + " MSI-X", address_);
    }
    msixCount_ = irq.count;
    if (bar0_.size < 4) ThrowSystemError(env, ENODEV, "mmap", Detail(address_, "BAR0") + " is empty", address_);
    regs_ = Mmio::Open(env, device_, bar0_.offset, bar0_.size, (bar0_.flags & VFIO_REGION_INFO_FLAG_MMAP) != 0,
                       Detail(address_, "BAR0"));
    if (bar2_.size == 0 || !(bar2_.flags & VFIO_REGION_INFO_FLAG_MMAP)) {
      ThrowSystemError(env, ENODEV, "mmap", Detail(address_, "BAR2") + (bar2_.size == 0 ? " is empty" : " cannot be mapped"), address_);
    }
    void* addr = mmap(nullptr, bar2_.size, PROT_READ | PROT_WRITE, MAP_SHARED, device_, static_cast<off_t>(bar2_.offset));
    if (addr == MAP_FAILED) ThrowSystemError(env, errno, "mmap", Detail(address_, "BAR2"), address_);
    memory_ = std::make_shared<Region>();
    memory_->addr = addr;
    memory_->size = bar2_.size;
    if (static_cast<double>(bar2_.size) <= maxBuffer) buffers_.SetWhole(NewExternal(env, memory_, 0, bar2_.size));
  } catch (...) {
    if (memory_) memory_->Unmap();
    Release();
    throw;
  }
}

VfioDevice::~VfioDevice() { Release(); }

void VfioDevice::Release() {
  if (irqsSet_ && device_ >= 0) {
    struct vfio_irq_set set;
    std::memset(&set, 0, sizeof set);
    set.argsz = sizeof set;
    set.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
    set.index = VFIO_PCI_MSIX_IRQ_INDEX;
    ioctl(device_, VFIO_DEVICE_SET_IRQS, &set);
    irqsSet_ = false;
  }
  // The memory region may outlive us in an ArrayBuffer's hold (close() unmaps it explicitly).
  memory_.reset();
  if (regs_) {
    regs_->Release();  // every holder (an interrupt table's doorbell) now fails with EBADF
    regs_.reset();
  }
  for (int* fd : {&device_, &group_, &container_}) {
    if (*fd >= 0) {
      close(*fd);
      *fd = -1;
    }
  }
  Unregister();
}

void VfioDevice::Teardown() {
  // No JS can run: unmap even if a buffer still points at BAR2.
  if (memory_) memory_->Unmap();
  buffers_.Forget();
  Release();
}

void VfioDevice::CheckOpen(Napi::Env env) const {
  if (device_ < 0) throw Napi::Error::New(env, "the VFIO device is closed");
}

// read32(offset) / write32(offset, value): one volatile 32-bit access to BAR0.
Napi::Value VfioDevice::Read32(const Napi::CallbackInfo& info) { return ReadRegister(info, regs_); }
Napi::Value VfioDevice::Write32(const Napi::CallbackInfo& info) { return WriteRegister(info, regs_); }

std::shared_ptr<Mmio> VfioDevice::MmioOf(Napi::Value value) {
  if (!value.IsObject() || !value.As<Napi::Object>().CheckTypeTag(&kVfioDeviceTag)) return nullptr;
  return Unwrap(value.As<Napi::Object>())->regs_;
}

static void CheckConfigAccess(Napi::Env env, uint32_t offset, uint32_t width, uint64_t size) {
  if ((width != 1 && width != 2 && width != 4) || offset % width != 0 || static_cast<uint64_t>(offset) + width > size) {
    throw Napi::RangeError::New(env, "config access must be 1, 2 or 4 bytes, aligned, inside the config region");
  }
}

// configRead(offset, width) -> the value (little-endian, as PCI config space is).
Napi::Value VfioDevice::ConfigRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  uint32_t offset = info[0].As<Napi::Number>().Uint32Value();
  uint32_t width = info[1].As<Napi::Number>().Uint32Value();
  CheckConfigAccess(env, offset, width, config_.size);
  uint32_t value = 0;  // x86 and the other Linux targets of this package are little-endian
  ssize_t n = pread(device_, &value, width, static_cast<off_t>(config_.offset + offset));
  if (n != static_cast<ssize_t>(width)) ThrowSystemError(env, n < 0 ? errno : EIO, "pread", Detail(address_, "config space"), address_);
  return Napi::Number::New(env, value);
}

// configWrite(offset, width, value).
Napi::Value VfioDevice::ConfigWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  uint32_t offset = info[0].As<Napi::Number>().Uint32Value();
  uint32_t width = info[1].As<Napi::Number>().Uint32Value();
  uint32_t value = info[2].As<Napi::Number>().Uint32Value();
  CheckConfigAccess(env, offset, width, config_.size);
  ssize_t n = pwrite(device_, &value, width, static_cast<off_t>(config_.offset + offset));
  if (n != static_cast<ssize_t>(width)) ThrowSystemError(env, n < 0 ? errno : EIO, "pwrite", Detail(address_, "config space"), address_);
  return env.Undefined();
}

// setIrqs([fd, ...]): MSI-X vector i triggers eventfd fds[i] (the kernel holds its own
// reference; the caller keeps the fds).
Napi::Value VfioDevice::SetIrqs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  Napi::Array fds = info[0].As<Napi::Array>();
  uint32_t count = fds.Length();
  if (count == 0 || count > msixCount_) {
    throw Napi::RangeError::New(env, "between 1 and " + std::to_string(msixCount_) + " MSI-X vectors, got " + std::to_string(count));
  }
  std::vector<uint8_t> raw(sizeof(struct vfio_irq_set) + count * sizeof(int32_t));
  auto* set = reinterpret_cast<struct vfio_irq_set*>(raw.data());
  set->argsz = static_cast<uint32_t>(raw.size());
  set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
  set->index = VFIO_PCI_MSIX_IRQ_INDEX;
  set->start = 0;
  set->count = count;
  for (uint32_t i = 0; i < count; i++) {
    int32_t fd = fds.Get(i).As<Napi::Number>().Int32Value();
    std::memcpy(set->data + i * sizeof(int32_t), &fd, sizeof fd);
  }
  if (ioctl(device_, VFIO_DEVICE_SET_IRQS, set) != 0) {
    ThrowSystemError(env, errno, "ioctl", Detail(address_, "VFIO_DEVICE_SET_IRQS") + " MSI-X eventfds", address_);
  }
  irqsSet_ = true;
  return env.Undefined();
}

// disableIrqs(): MSI-X off (DATA_NONE, count 0); nothing if it was not on.
Napi::Value VfioDevice::DisableIrqs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!irqsSet_ || device_ < 0) return env.Undefined();
  struct vfio_irq_set set;
  std::memset(&set, 0, sizeof set);
  set.argsz = sizeof set;
  set.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
  set.index = VFIO_PCI_MSIX_IRQ_INDEX;
  if (ioctl(device_, VFIO_DEVICE_SET_IRQS, &set) != 0) {
    ThrowSystemError(env, errno, "ioctl", Detail(address_, "VFIO_DEVICE_SET_IRQS") + " MSI-X off", address_);
  }
  irqsSet_ = false;
  return env.Undefined();
}

Napi::Value VfioDevice::GetBuffer(const Napi::CallbackInfo& info) {
  return buffers_.Whole(info.Env());
}

// window(offset, length) -> an ArrayBuffer over that part of BAR2, detached at close.
Napi::Value VfioDevice::Window(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!memory_ || memory_->addr == nullptr) throw Napi::Error::New(env, "the VFIO device is closed");
  double offset = info[0].As<Napi::Number>().DoubleValue();
  double length = info[1].As<Napi::Number>().DoubleValue();
  return buffers_.Window(env, memory_, offset, length, "BAR2");
}

static Napi::Object RegionObject(Napi::Env env, const VfioRegion& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("size", static_cast<double>(r.size));
  o.Set("offset", static_cast<double>(r.offset));
  o.Set("flags", r.flags);
  o.Set("mappable", (r.flags & VFIO_REGION_INFO_FLAG_MMAP) != 0);
  return o;
}

// info -> { address, group, bar0, bar2, config: { size, offset, flags, mappable }, msixVectors, bar0Mapped }
Napi::Value VfioDevice::GetInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("address", address_);
  o.Set("group", groupPath_);
  o.Set("bar0", RegionObject(env, bar0_));
  o.Set("bar2", RegionObject(env, bar2_));
  o.Set("config", RegionObject(env, config_));
  o.Set("msixVectors", msixCount_);
  o.Set("bar0Mapped", regs_ && regs_->Mapped());
  return o;
}

// fd -> the device fd (-1 once closed), for a Lease's own mapping of a BAR2 page.
Napi::Value VfioDevice::GetFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), device_); }

Napi::Value VfioDevice::GetClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), device_ < 0); }

Napi::Value VfioDevice::Close(const Napi::CallbackInfo& info) {
  // Detach before unmapping: views become length 0 instead of dangling.
  buffers_.DetachAll();
  if (memory_) memory_->Unmap();
  Release();
  return info.Env().Undefined();
}

}  // namespace ivshmem
