#!/usr/bin/env bash
# Install Azurite (the Azure Storage emulator) for the blob tests, with npm, into its own prefix.
#
# Pinned to 3.37.0: deltalake lists a table's log with `startFrom` (list with offset), which
# Azurite serves from 3.37.0 on; before it, every third commit to a table fails ("Invalid table
# version"). 3.37.0 declares engines node >= 22, but its blob service runs on this machine
# kind's Node 20 (measured: the whole lake, checkpoint store and Delta tests pass), so the
# engines check is not enforced. See docs/decisions/0502-azurite-pin-and-fixture.md.
# The tests find the binary at $AZURITE_PREFIX/bin/azurite-blob, else on PATH.
set -euo pipefail

AZURITE_VERSION="${AZURITE_VERSION:-3.37.0}"
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
  --engine-strict=false "azurite@${AZURITE_VERSION}"
"${AZURITE_PREFIX}/bin/azurite-blob" --version
