{
  "targets": [
    {
      "target_name": "synhold_native",
      "sources": ["native/netlink_socket.c", "native/file_lock.c", "native/addon.c"],
      "cflags": ["-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-O2"]
    }
  ]
}
