#!/usr/bin/env bash
# Install Azurite (the Azure Storage emulator) for the blob tests, with npm, into its own prefix.
#
# Azurite >= 3.36 requires Node >= 21 (its package.json engines); this machine kind has Node 20,
# so the version is pinned to 3.35.0, the last one whose engines accept Node >= 10.
# The tests find the binary on PATH or at $AZURITE_PREFIX/bin/azurite-blob.
set -euo pipefail

AZURITE_VERSION="${AZURITE_VERSION:-3.35.0}"
AZURITE_PREFIX="${AZURITE_PREFIX:-/opt/azurite-${AZURITE_VERSION}}"

if [ -x "${AZURITE_PREFIX}/bin/azurite-blob" ]; then
  echo "azurite ${AZURITE_VERSION} already in ${AZURITE_PREFIX}"
  exit 0
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq nodejs npm >/dev/null
fi

npm install --global --prefix "${AZURITE_PREFIX}" --no-audit --no-fund --loglevel=error \
  "azurite@${AZURITE_VERSION}"
"${AZURITE_PREFIX}/bin/azurite-blob" --version
