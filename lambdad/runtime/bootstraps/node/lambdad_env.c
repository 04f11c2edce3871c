/*
 * lambdad_env: the Node.js bootstrap's setter for _X_AMZN_TRACE_ID (an N-API addon).
 *
 * `process.env._X_AMZN_TRACE_ID = id` ends in glibc's setenv, which keeps every value a variable
 * ever had (old strings may still be pointed at): one unique trace id per invocation, ~140 bytes
 * an invocation for the life of the environment. setTraceId(id) writes "NAME=id" into one static
 * buffer instead and hands that buffer to putenv once (again only if the variable was deleted or
 * set by other means since); process.env reads the environment itself, so it sees the new value.
 *
 * Returns false, changing nothing, for a value that does not fit (the caller then assigns
 * process.env). Built by build.py (`lambdad build-runtimes`); without it the bootstrap assigns
 * process.env as before.
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include <stdlib.h>
#include <string.h>

#define NAME "_X_AMZN_TRACE_ID"
#define SIZE 512

static char buffer[SIZE];

static napi_value set_trace_id(napi_env env, napi_callback_info info) {
    size_t argc = 1;
    napi_value argv[1];
    napi_value result;
    char value[SIZE];
    size_t length = 0;
    const size_t prefix = sizeof NAME; /* "NAME=" without the terminator */
    int stored = 0;
    if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == 1 &&
        napi_get_value_string_utf8(env, argv[0], value, sizeof value, &length) == napi_ok &&
        length < SIZE - prefix - 1) {
        memcpy(buffer, NAME "=", prefix);
        memcpy(buffer + prefix, value, length + 1);
        if (getenv(NAME) != buffer + prefix) { /* not ours: first time, deleted or replaced */
            stored = putenv(buffer) == 0;
        } else {
            stored = 1;
        }
    }
    napi_get_boolean(env, stored, &result);
    return result;
}

NAPI_MODULE_INIT() {
    napi_value function;
    if (napi_create_function(env, "setTraceId", NAPI_AUTO_LENGTH, set_trace_id, NULL,
                             &function) != napi_ok ||
        napi_set_named_property(env, exports, "setTraceId", function) != napi_ok) {
        return NULL;
    }
    return exports;
}
