#!/usr/bin/env bash
# Render the chart into one plain manifest (CRDs + Namespace + operator) for
# clusters without Helm:
#
#   bash hack/render-bundle.sh > popup-operator.yaml
#   kubectl apply --server-side -f popup-operator.yaml
#
# Extra arguments are passed to `helm template`, e.g. --set watchNamespace=shop.
# Environment: RELEASE (default popup), NAMESPACE (default popup-system), HELM.
set -euo pipefail
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
release="${RELEASE:-popup}"
namespace="${NAMESPACE:-popup-system}"
helm="${HELM:-}"
if [[ -z "$helm" ]]; then
  cached="$CACHE/bin/helm"
  if [[ -x "$cached" ]]; then helm="$cached"
  elif command -v helm >/dev/null; then helm="$(command -v helm)"
  else helm="$(bash "$REPO/hack/install-helm.sh" | tail -n1)"
  fi
fi
# `helm template` does not emit the release namespace itself.
cat <<YAML
apiVersion: v1
kind: Namespace
metadata:
  name: ${namespace}
YAML
"$helm" template "$release" "$REPO/charts/popup-operator" \
  --namespace "$namespace" --include-crds "$@"
