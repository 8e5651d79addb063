# shellcheck shell=bash
# Sourced by the scripts that build from Go modules (hack/control-plane.sh, hack/cluster-addons.sh): the Go
# toolchain and the environment they build in. One module cache and one build cache under the cache root,
# so each script reuses what the other downloaded and compiled; the local toolchain only (no toolchain
# download), static binaries (CGO_ENABLED=0), no workspace or VCS stamping.
#
# Needs CACHE (the cache root). Sets GO: the go binary (default: go, else /usr/local/go/bin/go).
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"

# go_env: exits with an error when there is no Go toolchain; else exports the build environment and makes
# the caches. Called only when something is to be built, so that a cached run needs no Go at all.
go_env() {
  if ! command -v "$GO" >/dev/null 2>&1; then
    # Go 1.24: the wrapper modules say `go 1.24.0`, which an older toolchain refuses with GOTOOLCHAIN=local.
    echo "error: no Go toolchain ('$GO' not found); install Go >= 1.24 (e.g. apt-get install golang-go from a" \
         "recent release, or the official tarball) or set GO=/path/to/go" >&2
    exit 1
  fi
  export GOMODCACHE="$CACHE/go/mod"
  export GOCACHE="$CACHE/go/build"
  export GOFLAGS="-mod=mod -buildvcs=false"
  export GOTOOLCHAIN=local
  export CGO_ENABLED=0
  export GOWORK=off
  mkdir -p "$GOMODCACHE" "$GOCACHE"
}
