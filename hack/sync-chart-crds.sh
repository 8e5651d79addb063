#!/usr/bin/env bash
# Copy the generated CRDs from crds/ into the Helm chart's crds/ directory.
# Helm installs charts/popup-operator/crds/* on `helm install` (never on upgrade);
# tests/helm.rs fails when the copy drifts from crds/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$root/crds"
dst="$root/charts/popup-operator/crds"
mkdir -p "$dst"
# Remove stale copies, then copy byte for byte.
find "$dst" -maxdepth 1 -name '*.yaml' -delete
cp -v "$src"/*.yaml "$dst"/
