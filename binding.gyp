{
  "targets": [
    {
      "target_name": "vsockmesh_native",
      "sources": [
        "proxy/native/js.c",
        "proxy/native/loop.c",
        "proxy/native/address.c",
        "proxy/native/sockets.c",
        "proxy/native/listen.c",
        "proxy/native/connect.c",
        "proxy/native/read.c",
        "proxy/native/relay.c",
        "proxy/native/duplex.c",
        "proxy/native/vsock.c",
        "proxy/native/original-dst.c",
        "proxy/native/stream.c",
        "proxy/native/tls-context.c",
        "proxy/native/tls.c",
        "proxy/native/tls-bio.c",
        "proxy/native/exec.c",
        "proxy/native/trim.c",
        "proxy/native/proxy-header.c",
        "proxy/native/warm.c",
        "proxy/native/settle.cc",
        "proxy/native/module.c"
      ],
      "cflags!": ["-Wno-unused-parameter"],
      "cflags": ["-fvisibility=hidden", "-Wall", "-Wextra", "-Wshadow", "-Wconversion"],
      "cflags_c": ["-std=gnu11", "-Wstrict-prototypes", "-Wmissing-prototypes"],
      "cflags_cc": ["-Wmissing-declarations"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"]
    },
    {
      "target_name": "vsockmesh_trim",
      "sources": ["proxy/native/server-trim.cc"],
      "cflags!": ["-Wno-unused-parameter"],
      "cflags": ["-fvisibility=hidden", "-Wall", "-Wextra", "-Wshadow", "-Wconversion"],
      "cflags_cc": ["-Wmissing-declarations"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"]
    }
  ]
}
