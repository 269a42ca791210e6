/* Shared by the addon's source files: registration hooks and error helpers. */
#ifndef SYNHOLD_ADDON_H
#define SYNHOLD_ADDON_H
#include <node_api.h>

/* Throws an Error with .errno (positive number) and .syscall set, so the
 * TypeScript side can map it to an errno name and a typed error. */
void throw_errno(napi_env env, const char *what, int err);

void register_netlink_socket(napi_env env, napi_value exports);
void register_file_lock(napi_env env, napi_value exports);
void register_netns_file(napi_env env, napi_value exports);
void register_spawn(napi_env env, napi_value exports);
void register_sched(napi_env env, napi_value exports);
void register_checksum(napi_env env, napi_value exports);
void register_reuseport(napi_env env, napi_value exports);
#endif
