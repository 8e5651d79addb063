#!/bin/sh
# /usr/local/bin/docker-entrypoint.sh of popup.local/redis:<version>-timeseries (assembled by
# hack/images.sh from the same files as popup.local/redis-stack-server). It follows the official `redis`
# image's entrypoint, which the operator's `engine: native` pods rely on (they pass only arguments):
#   - a first argument that starts with `-`, or ends in `.conf`, means "redis-server with these";
#   - started as root, it hands /data to the redis user and re-runs itself as that user;
#   - umask 0077 when the umask is the default 0022 (Redis files are private);
#   - then exec, so redis-server is PID 1 and handles SIGTERM.
# The one addition: redis-server gets `--loadmodule .../redistimeseries.so`, because Redis 8 (what the
# native engine targets) has TimeSeries built in while this image's Redis is 7.4 with the module.
set -eu

TIMESERIES=/opt/redis-stack/lib/redistimeseries.so

first="${1:-}"
if [ "${first#-}" != "$first" ] || [ "${first%.conf}" != "$first" ]; then
  set -- redis-server "$@"
fi

is_server=""
case "${1:-}" in
  redis-server | */redis-server) is_server=1 ;;
esac

if [ -n "$is_server" ] && [ "$(id -u)" = 0 ]; then
  # Upstream's gosu/setpriv step, with busybox su (no PAM; root may choose any shell). Upstream
  # chowns `.`, its WORKDIR /data; naming /data avoids chowning / when started with another workdir.
  if [ -d /data ]; then find /data \! -user redis -exec chown redis:redis '{}' +; fi
  exec su -p -s /bin/sh -- redis -c 'exec "$0" "$@"' "$0" "$@"
fi

if [ "$(umask)" = 0022 ]; then
  umask 0077
fi

if [ -n "$is_server" ] && [ -f "$TIMESERIES" ]; then
  server="$1"
  shift
  case "${1:-}" in
    # Flags redis-server only honours as its very first argument: leave the line alone.
    -v | --version | -h | --help | --test-memory | --check-system) ;;
    # A config file (or `-` for stdin) must stay first; the module goes right after it.
    "" | --*) set -- --loadmodule "$TIMESERIES" "$@" ;;
    *)
      conf="$1"
      shift
      set -- "$conf" --loadmodule "$TIMESERIES" "$@"
      ;;
  esac
  set -- "$server" "$@"
fi

exec "$@"
