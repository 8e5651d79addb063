/* A Redis module that loads and does nothing: it only tells Redis its name (NAME, set by the compiler
 * line in hack/images.sh, e.g. "placeholder-search"). popup.local/redismod puts one at each path of a
 * redislabs/redismod module the pop-up store never uses and the RedisGears 1 runtime does not have, so
 * that the operator's redismod load line (src/render/redis.rs) starts unchanged. It registers no command:
 * anything that needs the real module fails with "unknown command", as it should.
 *
 * No redismodule.h: the one call Redis requires of OnLoad is RedisModule_SetModuleAttribs, fetched
 * through the GetApi function pointer Redis stores as the first field of the context (what
 * RedisModule_Init in redismodule.h does). Built with -nostdlib: it calls no library. */
typedef struct RedisModuleCtx RedisModuleCtx;
typedef struct RedisModuleString RedisModuleString;

#ifndef NAME
#define NAME "placeholder"
#endif

enum { MODULE_OK = 0, MODULE_ERR = 1, MODULE_VERSION = 1, MODULE_APIVER_1 = 1 };

int RedisModule_OnLoad(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
  (void)argv;
  (void)argc;
  int (*get_api)(const char *, void *) = (int (*)(const char *, void *))((void **)ctx)[0];
  void (*set_attribs)(RedisModuleCtx *, const char *, int, int) = 0;
  if (get_api("RedisModule_SetModuleAttribs", (void *)&set_attribs) != MODULE_OK || !set_attribs) return MODULE_ERR;
  set_attribs(ctx, NAME, MODULE_VERSION, MODULE_APIVER_1);
  return MODULE_OK;
}
