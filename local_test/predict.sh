#!/usr/bin/env bash
# Posts a payload file to /invocations, as SageMaker's InvokeEndpoint would, and prints the answer.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: local_test/predict.sh PAYLOAD [CONTENT_TYPE] [URL]

Posts the file PAYLOAD to the inference server and prints the response body.

  PAYLOAD        a request body file, e.g. local_test/payloads/embed_texts.json
  CONTENT_TYPE   its Content-Type (default: application/json)
  URL            where to post it (default: http://localhost:8080/invocations)
  -h, --help     show this help

The response status and X-Request-Id are printed to stderr; the exit status is non-zero on an HTTP error.
USAGE
}

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") usage >&2; exit 2 ;;
esac
payload="$1"
content_type="${2:-application/json}"
url="${3:-http://localhost:8080/invocations}"
if [ ! -f "$payload" ]; then
  echo "predict.sh: no such file: $payload" >&2
  exit 2
fi

headers="$(mktemp)"
trap 'rm -f "$headers"' EXIT
status=0
curl --silent --show-error --dump-header "$headers" -H "Content-Type: $content_type" \
  -H "Accept: application/json" --data-binary "@$payload" "$url" || status=$?
if [ -t 1 ]; then echo; fi  # end the body's line on a terminal; leave piped output byte-exact
# Print the status line and request id of the final response.
grep -iE '^(HTTP/|X-Request-Id:)' "$headers" | tr -d '\r' >&2 || true
[ "$status" -eq 0 ] || exit "$status"
code="$(awk 'toupper($1) ~ /^HTTP\// {c=$2} END {print c}' "$headers")"
case "$code" in
  2*) exit 0 ;;
  *) exit 1 ;;
esac
