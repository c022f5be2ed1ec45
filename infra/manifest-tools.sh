#!/usr/bin/env bash
# Installs (once) what renders and validates the deployment offline, for `make test`:
# kustomize, built from its Go module and cached like FerretDB, and the npm packages that
# validate the custom resources (KEDA, Prometheus operator), in .local/node.
# (hadolint and kubernetes-validate come with the Python dev dependencies.)
#
#   infra/manifest-tools.sh install   install what is missing
#   infra/manifest-tools.sh paths     print KUSTOMIZE=<binary> and NODE_DIR=<directory>
set -euo pipefail

LOG_TAG=manifest-tools
# shellcheck source=infra/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
KUSTOMIZE_VERSION="v5.7.1"
KUSTOMIZE="$CACHE/kustomize-$KUSTOMIZE_VERSION/kustomize"
NODE_SRC="$ROOT/tests/deploy/node"
NODE_DIR="$STATE/node"

install_kustomize() {
  [ -x "$KUSTOMIZE" ] && return
  command -v go >/dev/null || { log "Go is required to build kustomize"; exit 1; }
  log "building kustomize $KUSTOMIZE_VERSION (once, cached in $CACHE)"
  mkdir -p "$CACHE"
  local tmp
  tmp="$(mktemp -d "$CACHE/kustomize-build.XXXXXX")"
  GOBIN="$tmp" go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
  mkdir -p "$(dirname "$KUSTOMIZE")"
  mv "$tmp/kustomize" "$KUSTOMIZE"
  rm -rf "$tmp"
}

install_node_packages() {
  if ! command -v npm >/dev/null; then
    log "installing nodejs and npm from apt"
    apt_install nodejs npm
  fi
  mkdir -p "$NODE_DIR"
  # npm ci again only when the lock file changed since the last install.
  if [ ! -d "$NODE_DIR/node_modules" ] || ! cmp -s "$NODE_SRC/package-lock.json" "$NODE_DIR/package-lock.json"; then
    log "installing the custom resource schemas (npm) into $NODE_DIR"
    cp "$NODE_SRC/package.json" "$NODE_SRC/package-lock.json" "$NODE_DIR/"
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >&2)
  fi
  cp "$NODE_SRC/validate-custom-resources.mjs" "$NODE_DIR/"
}

case "${1:-}" in
  install)
    install_kustomize
    install_node_packages
    ;;
  paths)
    echo "KUSTOMIZE=$KUSTOMIZE"
    echo "NODE_DIR=$NODE_DIR"
    ;;
  *)
    echo "usage: $0 install|paths" >&2
    exit 2
    ;;
esac
