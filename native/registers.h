// The registers of a PCI device that no driver holds, through its sysfs resource file
// (/sys/bus/pci/devices/ADDR/resource0): mapped, 32-bit MMIO natively. No interrupts: those
// need VFIO (vfio.h). Which register means what is the TypeScript owner's (lib/sys/pci-resource.ts).
#pragma once
#include <napi.h>

#include <memory>
#include <string>

#include "addon.h"
#include "mmio.h"

namespace ivshmem {

class Registers : public Napi::ObjectWrap<Registers>, public Resource {
 public:
  static void Init(Napi::Env env, Napi::Object exports, AddonData* data);
  // new Registers(path, skip, size): maps `size` bytes of registers found `skip` bytes into the
  // file's first page (a BAR need not start on a page).
  explicit Registers(const Napi::CallbackInfo& info);
  ~Registers() override;
  void Teardown() override;
  // The registers of this object, or null if `value` is not one.
  static std::shared_ptr<Mmio> MmioOf(Napi::Value value);

 private:
  Napi::Value Read32(const Napi::CallbackInfo& info);
  Napi::Value Write32(const Napi::CallbackInfo& info);
  Napi::Value GetClosed(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  void Release();

  std::shared_ptr<Mmio> mmio_;
};

// 32-bit register access of JS calls (offset, [value]), for Registers and VfioDevice alike:
// a RangeError outside the registers or unaligned, a system error if the access fails.
Napi::Value ReadRegister(const Napi::CallbackInfo& info, const std::shared_ptr<Mmio>& mmio);
Napi::Value WriteRegister(const Napi::CallbackInfo& info, const std::shared_ptr<Mmio>& mmio);

}  // namespace ivshmem
