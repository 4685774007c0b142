#!/usr/bin/env bash
# Start Azurite's blob service in the background for local runs and demos.
#
#   eval "$(deployment/ci/start-azurite.sh)"    # exports GONDOLA_AZURITE_BLOB_ENDPOINT
#
# The tests do not need this: their `azurite` fixture starts a private Azurite on a free port
# unless GONDOLA_AZURITE_BLOB_ENDPOINT already points at a running one.
# Options (env): AZURITE_PORT (default 10000), AZURITE_LOCATION (default a new temp dir).
set -euo pipefail

AZURITE_VERSION="${AZURITE_VERSION:-3.37.0}"
AZURITE_PREFIX="${AZURITE_PREFIX:-/opt/azurite-${AZURITE_VERSION}}"
PORT="${AZURITE_PORT:-10000}"
LOCATION="${AZURITE_LOCATION:-$(mktemp -d -t gondola-azurite.XXXXXX)}"

BIN="$(command -v azurite-blob || true)"
[ -n "$BIN" ] || BIN="${AZURITE_PREFIX}/bin/azurite-blob"
[ -x "$BIN" ] || { echo "azurite-blob not found; run deployment/ci/install-azurite.sh" >&2; exit 1; }

# --skipApiVersionCheck: newer Azure SDKs send API versions this Azurite does not know yet.
# --loose: ignore headers Azurite does not implement instead of failing the request.
nohup "$BIN" --disableTelemetry --skipApiVersionCheck --loose --silent \
  --blobHost 127.0.0.1 --blobPort "$PORT" --location "$LOCATION" \
  >"$LOCATION/azurite.log" 2>&1 &
echo $! >"$LOCATION/azurite.pid"

for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "export GONDOLA_AZURITE_BLOB_ENDPOINT=http://127.0.0.1:${PORT}/devstoreaccount1"
    echo "# azurite pid $(cat "$LOCATION/azurite.pid"), data and log in $LOCATION" >&2
    exit 0
  fi
  sleep 0.1
done
echo "Azurite did not start; see $LOCATION/azurite.log" >&2
exit 1
