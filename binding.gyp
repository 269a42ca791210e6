{
  "targets": [
    {
      "target_name": "synhold_native",
      "sources": ["native/netlink_socket.c", "native/file_lock.c", "native/netns_file.c", "native/spawn.c", "native/sched.c", "native/checksum.c", "native/reuseport.c", "native/addon.c"],
      "cflags": ["-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-O2"]
    },
    {
      "target_name": "synhold-watchdog",
      "type": "executable",
      "sources": ["native/watchdog.c"],
      "cflags": ["-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-O2"]
    }
  ]
}
