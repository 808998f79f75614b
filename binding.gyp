{
  "targets": [
    {
      "target_name": "ivshmem",
      "sources": [
        "native/addon.cc",
        "native/errors.cc",
        "native/mapping.cc",
        "native/eventfd.cc",
        "native/watcher.cc",
        "native/socket.cc",
        "native/interrupt_table.cc",
        "native/lease.cc",
        "native/mmio.cc",
        "native/registers.cc",
        "native/vfio.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": [
        "NAPI_VERSION=8",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS",
        "NAPI_CPP_EXCEPTIONS",
        "NODE_ADDON_API_CPP_EXCEPTIONS_ALL"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags": ["-Wall", "-Wextra", "-fvisibility=hidden"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-fvisibility=hidden", "-O2"]
    }
  ]
}
