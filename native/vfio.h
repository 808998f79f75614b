// A PCI device owned through Linux VFIO (inside a guest: the ivshmem-doorbell device bound to
// vfio-pci): the container, group and device fds, BAR0 and BAR2 mapped through the device fd,
// config space, and MSI-X vectors delivered to eventfds. Only the syscalls: which registers mean
// what, and the bus-master bit, are the TypeScript owner's (lib/sys/vfio-device.ts).
#pragma once
#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "addon.h"
#include "mapping.h"
#include "mmio.h"

namespace ivshmem {

struct VfioRegion {
  uint64_t size = 0;
  uint64_t offset = 0;
  uint32_t flags = 0;
};

class VfioDevice : public Napi::ObjectWrap<VfioDevice>, public Resource {
 public:
  static void Init(Napi::Env env, Napi::Object exports, AddonData* data);
  // new VfioDevice(groupPath, address, maxBuffer): opens /dev/vfio/vfio and groupPath, checks
  // the group is viable, attaches it to a type-1 IOMMU container, gets the device fd for the
  // PCI address, maps BAR0 and BAR2. Everything opened so far is released if a step fails.
  explicit VfioDevice(const Napi::CallbackInfo& info);
  ~VfioDevice() override;
  void Teardown() override;
  // BAR0 of this object, or null if `value` is not a VfioDevice.
  static std::shared_ptr<Mmio> MmioOf(Napi::Value value);

 private:
  Napi::Value Read32(const Napi::CallbackInfo& info);
  Napi::Value Write32(const Napi::CallbackInfo& info);
  Napi::Value ConfigRead(const Napi::CallbackInfo& info);
  Napi::Value ConfigWrite(const Napi::CallbackInfo& info);
  Napi::Value SetIrqs(const Napi::CallbackInfo& info);
  Napi::Value DisableIrqs(const Napi::CallbackInfo& info);
  Napi::Value GetBuffer(const Napi::CallbackInfo& info);
  Napi::Value Window(const Napi::CallbackInfo& info);
  Napi::Value GetInfo(const Napi::CallbackInfo& info);
  Napi::Value GetClosed(const Napi::CallbackInfo& info);
  Napi::Value GetFd(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  VfioRegion RegionInfo(Napi::Env env, uint32_t index);
  void CheckOpen(Napi::Env env) const;
  // Interrupts off, BARs unmapped, device, group and container closed: in reverse order of opening.
  void Release();

  std::string address_;
  std::string groupPath_;
  int container_ = -1;
  int group_ = -1;
  int device_ = -1;
  VfioRegion bar0_, bar2_, config_;
  uint32_t msixCount_ = 0;
  bool irqsSet_ = false;
  // BAR0: mapped when VFIO allows it, otherwise pread/pwrite on the device fd.
  std::shared_ptr<Mmio> regs_;
  std::shared_ptr<Region> memory_;
  RegionBuffers buffers_;
};

}  // namespace ivshmem
