#!/usr/bin/env bash
# Runs the image the way SageMaker does: `docker run IMAGE serve`, with a model directory mounted read-only
# at /opt/ml/model (where SageMaker unpacks model.tar.gz), listening on port 8080.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: local_test/serve_local.sh [--model-dir DIR] [--image IMAGE] [--port PORT] [--gpus]
                                 [--read-only] [--network-none] [-- EXTRA_DOCKER_ARGS...]

Runs the inference container locally the SageMaker way:
  docker run --rm -p PORT:8080 -v DIR:/opt/ml/model:ro IMAGE serve

  --model-dir DIR   model directory (open_clip_config.json + open_clip_model.safetensors), mounted read-only
                    at /opt/ml/model, where SageMaker unpacks model.tar.gz; make one with
                    local_test/make_model.sh. Leave it out for an image with a baked-in model, or to let the
                    container download its default model (needs network), e.g. `-- -e CLIP_MODEL=ViT-B-16:openai`
  --image IMAGE     image to run (default: clip-sagemaker:latest)
  --port PORT       host port mapped to the container's 8080 (default: 8080)
  --gpus            give the container every GPU (docker run --gpus all; needs the NVIDIA Container Toolkit)
  --read-only       read-only root file system with a tmpfs at /tmp (--read-only --tmpfs /tmp)
  --network-none    no network at all (--network none), as under SageMaker network isolation. No port can be
                    published then: send requests from inside, e.g.
                    docker exec CONTAINER python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8080/ping').read())"
  -h, --help        show this help

Arguments after `--` go to `docker run` before the image name, e.g. `-- -e LOG_LEVEL=debug --name clip`.
Set DOCKER to use another docker client (default: docker on PATH).
USAGE
}

image="clip-sagemaker:latest"
model_dir=""
port="8080"
gpus=0
read_only=0
network_none=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --image) image="${2:?--image needs a value}"; shift 2 ;;
    --model-dir) model_dir="${2:?--model-dir needs a value}"; shift 2 ;;
    --port) port="${2:?--port needs a value}"; shift 2 ;;
    --gpus) gpus=1; shift ;;
    --read-only) read_only=1; shift ;;
    --network-none) network_none=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "serve_local.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

args=(run --rm)
if [ "$network_none" = 1 ]; then
  args+=(--network none)
  echo "serve_local.sh: --network-none: no port is published; send requests with docker exec" >&2
else
  args+=(-p "$port:8080")
fi
[ "$read_only" = 1 ] && args+=(--read-only --tmpfs /tmp)
[ "$gpus" = 1 ] && args+=(--gpus all)
if [ -n "$model_dir" ]; then
  if [ ! -d "$model_dir" ]; then
    echo "serve_local.sh: --model-dir $model_dir is not a directory" >&2
    exit 2
  fi
  args+=(-v "$(cd "$model_dir" && pwd):/opt/ml/model:ro")
fi

set -x
exec "${DOCKER:-docker}" "${args[@]}" "${extra[@]}" "$image" serve
