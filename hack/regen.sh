#!/usr/bin/env bash
# Regenerates every generated copy in the repository from its source; the tests that compare them name
# this command. Run it after changing a source, then commit what it changed.
#
#   source                        generated copy
#   the Rust types (src/crd.rs)   crds/popupstores.popup.dev.yaml (`popup-operator crd`)
#   crds/*.yaml                   charts/popup-operator/crds/*.yaml (byte copies: helm installs them)
#
# Hand-maintained, test-checked (tests/helm.rs), so not written here: the chart's RBAC rules
# (templates/_helpers.tpl) and the RBAC table of docs/security.md, both from src/controller/rbac.rs.
set -euo pipefail
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

# `popup-operator crd` prints the file whole, its generated-file header (crd::CRD_FILE_HEADER) first;
# tests/crd.rs checks it byte for byte.
cargo run --quiet --bin popup-operator -- crd > crds/popupstores.popup.dev.yaml.tmp
mv crds/popupstores.popup.dev.yaml.tmp crds/popupstores.popup.dev.yaml

dst=charts/popup-operator/crds
mkdir -p "$dst"
# Copies of files no longer in crds/ go too.
find "$dst" -maxdepth 1 -name '*.yaml' -delete
cp crds/*.yaml "$dst"/

git status --short -- crds "$dst"
