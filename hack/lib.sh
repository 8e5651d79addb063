# shellcheck shell=bash
# Sourced by the scripts in hack/: what they share, written once.
#
#   REPO   the repository's root
#   CACHE  the cache root: POPUP_CACHE, default ~/.cache/popup-operator. What is too heavy to build again
#          on every run (the control plane, images, Rust target folders, Go caches) lives there, outside
#          the repository; a missing cache only costs time.
#   log, die   messages on stderr, tagged with the script's name
#   as_root    runs a command as root (directly, else with sudo)
#   go_env     the Go build environment of the scripts that build from Go modules; sets GO
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${POPUP_CACHE:-$HOME/.cache/popup-operator}"
# The sourcing script's name, e.g. [images].
_LOG_TAG="$(basename "${BASH_SOURCE[1]:-$0}" .sh)"

log() { echo "[$_LOG_TAG] $*" >&2; }
die() { echo "[$_LOG_TAG] ERROR: $*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root (or sudo) for: $*"; fi
}

# go_env: exits with an error when there is no Go toolchain; else exports the build environment and makes
# the caches. Called only when something is to be built, so that a cached run needs no Go at all. One
# module cache and one build cache under the cache root, so each script reuses what the other downloaded
# and compiled; the local toolchain only (no toolchain download), static binaries (CGO_ENABLED=0), no
# workspace or VCS stamping.
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
go_env() {
  if ! command -v "$GO" >/dev/null 2>&1; then
    # Go 1.24: the wrapper modules say `go 1.24.0`, which an older toolchain refuses with GOTOOLCHAIN=local.
    die "no Go toolchain ('$GO' not found); install Go >= 1.24 (e.g. apt-get install golang-go from a" \
        "recent release, or the official tarball) or set GO=/path/to/go"
  fi
  export GOMODCACHE="$CACHE/go/mod"
  export GOCACHE="$CACHE/go/build"
  export GOFLAGS="-mod=mod -buildvcs=false"
  export GOTOOLCHAIN=local
  export CGO_ENABLED=0
  export GOWORK=off
  mkdir -p "$GOMODCACHE" "$GOCACHE"
}
