#!/bin/sh
# /entrypoint.sh of popup.local/redis-stack-server (assembled by hack/images.sh), written to start Redis
# the way redis/redis-stack-server's entrypoint does, so that the operator's `engine: triggers` pods work
# unchanged with it:
#   - /redis-stack.conf first when it exists, then `--dir ${REDIS_DATA_DIR:-/data} --protected-mode no
#     --daemonize no`;
#   - every stack module, each followed by its ${REDIS<MODULE>_ARGS} (RediSearch gets the upstream
#     default limits when REDISEARCH_ARGS is empty);
#   - finally ${REDIS_ARGS}, so user arguments (port, password, persistence) win.
# Differences: a module whose .so is missing is skipped instead of failing, and Redis is exec'd so that
# it is PID 1 and receives SIGTERM itself (upstream uses dumb-init as PID 1 for that).
set -eu

BASEDIR=/opt/redis-stack
LIB="$BASEDIR/lib"
cd "$BASEDIR"

# The *_ARGS variables are word lists, split on spaces as upstream does; no globbing, so a password
# containing `*` or `?` stays as it is.
set -f

REDIS_DATA_DIR="${REDIS_DATA_DIR:-/data}"
if [ -z "${REDISEARCH_ARGS:-}" ]; then
  REDISEARCH_ARGS="MAXSEARCHRESULTS 10000 MAXAGGREGATERESULTS 10000"
fi

CONFFILE=""
if [ -f /redis-stack.conf ]; then
  CONFFILE=/redis-stack.conf
fi

MODULES=""
load() { # load MODULE.so [ARGS...]
  so="$LIB/$1"
  shift
  if [ -f "$so" ]; then
    MODULES="$MODULES --loadmodule $so $*"
  else
    echo "entrypoint: $so not in this image, not loaded" >&2
  fi
}
load rediscompat.so
load redisearch.so "$REDISEARCH_ARGS"
load redistimeseries.so "${REDISTIMESERIES_ARGS:-}"
load rejson.so "${REDISJSON_ARGS:-}"
load redisbloom.so "${REDISBLOOM_ARGS:-}"
load redisgears.so v8-plugin-path "$LIB/libredisgears_v8_plugin.so" "${REDISGEARS_ARGS:-}"

# shellcheck disable=SC2086 # word splitting is the point (see above)
exec "$BASEDIR/bin/redis-server" $CONFFILE \
  --dir "$REDIS_DATA_DIR" \
  --protected-mode no \
  --daemonize no \
  $MODULES \
  ${REDIS_ARGS:-}
