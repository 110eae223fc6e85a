#!/usr/bin/env bash
# One command on a Linux GPU box: build the images if needed, make a token if there is none, start
# `live-upscale serve` on port 8765 and print what to type into TouchDesigner.
#
#   linux/serve.sh [--backend flashvsr] [--model NAME] [--port 8765] [--no-docker] [-- extra serve args]
#
# --no-docker runs the package from a venv instead (python3 -m venv .venv && pip install -e ".[remote]"
# and a CUDA torch first). The token lives in $LIVE_UPSCALE_TOKEN_FILE (default
# ~/.config/live-upscale/token); give the same token to the client (LIVE_UPSCALE_REMOTE_TOKEN).
set -euo pipefail
cd "$(dirname "$0")/.."
BACKEND=auto MODEL="" PORT=8765 DOCKER=1 EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) BACKEND="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    --no-docker) DOCKER=0; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "unknown option $1 (see the top of $0)" >&2; exit 2 ;;
  esac
done
TOKEN_FILE="${LIVE_UPSCALE_TOKEN_FILE:-$HOME/.config/live-upscale/token}"
if [ ! -s "$TOKEN_FILE" ]; then
  mkdir -p "$(dirname "$TOKEN_FILE")"
  (umask 077; python3 -c "import secrets; print(secrets.token_hex(32))" > "$TOKEN_FILE")
  echo "made a new token in $TOKEN_FILE"
fi
chmod 600 "$TOKEN_FILE"
HOST_IP="$(hostname -I 2>/dev/null | awk '{print $1}')"
echo "clients: --backend remote --model \"http://${HOST_IP:-THIS-HOST}:$PORT\" with LIVE_UPSCALE_REMOTE_TOKEN=$(cat "$TOKEN_FILE")"
echo "(put TLS in front of it on the open internet: linux/README.md, \"TLS\")"

if [ "$DOCKER" = 0 ]; then
  exec live-upscale serve --host 0.0.0.0 --port "$PORT" --token-file "$TOKEN_FILE" --backend "$BACKEND" \
    ${MODEL:+--model "$MODEL"} "${EXTRA[@]}"
fi
docker image inspect scope-live-upscale > /dev/null 2>&1 || docker build -f linux/Dockerfile -t scope-live-upscale .
docker build -q -f linux/Dockerfile.serve -t live-upscale-serve .
exec docker run --rm --gpus all -p "$PORT:8765" \
  -v "$(realpath "$TOKEN_FILE"):/run/secrets/live-upscale-token:ro" \
  -v live-upscale-workspace:/workspace \
  -e LIVE_UPSCALE_SERVE_BACKEND="$BACKEND" -e LIVE_UPSCALE_SERVE_MODEL="$MODEL" \
  -e LIVE_UPSCALE_SERVE_ARGS="${EXTRA[*]:-}" \
  live-upscale-serve
