/*
 * getScheduler() / setScheduler(policy, priority, resetOnFork): the calling
 * thread's scheduling policy, as sched_getscheduler(2) / sched_setscheduler(2)
 * with pid 0, which on Linux name the calling thread only: Node's main thread,
 * not its libuv or V8 threads.
 *
 * Why: protect's watch loop decides the release the moment the old listener is
 * gone; on a host whose CPUs are busy with the very server being reloaded, a
 * normal-priority loop waits for a CPU after each wake-up, and that wait was the
 * tail of the release-after-swap gap (src/host/sched.ts). SCHED_RESET_ON_FORK
 * keeps the reload command and the watchdog, which protect starts while raised,
 * at normal priority.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <node_api.h>

#include "addon.h"

static napi_value get_scheduler(napi_env env, napi_callback_info info) {
  (void)info;
  int policy = sched_getscheduler(0);
  if (policy < 0) { throw_errno(env, "sched_getscheduler", errno); return NULL; }
  struct sched_param param;
  if (sched_getparam(0, &param) < 0) { throw_errno(env, "sched_getparam", errno); return NULL; }
  napi_value out, v;
  napi_create_array_with_length(env, 3, &out);
  napi_create_int32(env, policy & ~SCHED_RESET_ON_FORK, &v);
  napi_set_element(env, out, 0, v);
  napi_create_int32(env, param.sched_priority, &v);
  napi_set_element(env, out, 1, v);
  napi_get_boolean(env, (policy & SCHED_RESET_ON_FORK) != 0, &v);
  napi_set_element(env, out, 2, v);
  return out;
}

static napi_value set_scheduler(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t policy, priority;
  bool reset;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 3 || napi_get_value_int32(env, argv[0], &policy) != napi_ok || napi_get_value_int32(env, argv[1], &priority) != napi_ok ||
      napi_get_value_bool(env, argv[2], &reset) != napi_ok) {
    napi_throw_type_error(env, NULL, "setScheduler(policy, priority, resetOnFork)");
    return NULL;
  }
  struct sched_param param = {.sched_priority = priority};
  if (sched_setscheduler(0, policy | (reset ? SCHED_RESET_ON_FORK : 0), &param) < 0) {
    throw_errno(env, "sched_setscheduler", errno);
    return NULL;
  }
  return NULL;
}

void register_sched(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"getScheduler", NULL, get_scheduler, NULL, NULL, NULL, napi_default, NULL},
      {"setScheduler", NULL, set_scheduler, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, 2, props);
}
