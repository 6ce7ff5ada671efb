#!/usr/bin/env bash
# Runs the image the way SageMaker does: `docker run IMAGE serve`, with a model directory mounted read-only
# at /opt/ml/model (where SageMaker unpacks model.tar.gz), listening on port 8080.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: local_test/serve_local.sh --model-dir DIR [--image IMAGE] [--port PORT] [-- EXTRA_DOCKER_ARGS...]

Runs the inference container locally the SageMaker way:
  docker run --rm -p PORT:8080 -v DIR:/opt/ml/model:ro IMAGE serve

  --model-dir DIR   model directory (open_clip_config.json + open_clip_model.safetensors), required;
                    make one with `python -m clip_sagemaker.model_files` (see README.md)
  --image IMAGE     image to run (default: clip-sagemaker:latest)
  --port PORT       host port mapped to the container's 8080 (default: 8080)
  -h, --help        show this help

Arguments after `--` go to `docker run` before the image name, e.g. `-- -e LOG_LEVEL=debug` or
`-- --network none --read-only --tmpfs /tmp` to simulate SageMaker's network isolation.
USAGE
}

image="clip-sagemaker:latest"
model_dir=""
port="8080"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --image) image="${2:?--image needs a value}"; shift 2 ;;
    --model-dir) model_dir="${2:?--model-dir needs a value}"; shift 2 ;;
    --port) port="${2:?--port needs a value}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "serve_local.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

if [ -z "$model_dir" ]; then
  echo "serve_local.sh: --model-dir is required" >&2
  usage >&2
  exit 2
fi
if [ ! -d "$model_dir" ]; then
  echo "serve_local.sh: --model-dir $model_dir is not a directory" >&2
  exit 2
fi
model_dir="$(cd "$model_dir" && pwd)"

set -x
exec docker run --rm -p "$port:8080" -v "$model_dir:/opt/ml/model:ro" "${extra[@]}" "$image" serve
