{
  "targets": [
    {
      "target_name": "vsockmesh_native",
      "sources": [
        "proxy/native/module.c",
        "proxy/native/sock.c",
        "proxy/native/relay.c",
        "proxy/native/duplex.c",
        "proxy/native/vsock.c"
      ],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
