#!/usr/bin/env bash
# CI: builds the Docker image and runs it the way SageMaker does, then checks its answers.
#
#   .ci/docker_smoke.sh            (as root, on Debian; .ci/run calls it after the tests)
#
# Steps: provision the host (.ci/docker_host.sh: hadolint; Docker and debootstrap from Debian if missing;
# dockerd unless one is running; the local base image, so that no registry is needed) and lint the Dockerfile;
# build the image (the host's wheels, if it has them, are hard-linked into docker/wheels/ by
# .ci/gather_wheels.py so that pip need not download torch again); then, with a tiny model
# (tests/fixtures/tiny_open_clip_config.json, the tests' own) mounted at /opt/ml/model:ro:
#   1. docker run with the port published on 127.0.0.1: /ping, /execution-parameters, /info and every task on
#      /invocations checked with curl, the values checked by .ci/smoke_checks.py; every process runs as uid 1000;
#      200 slow and stalled clients (local_test/slow_clients.py) while /ping and real requests must be answered;
#   2. docker run --network none --read-only --tmpfs /tmp (SageMaker network isolation): the same checks from
#      inside the container, and /metrics counting them (its files live in /tmp); no network, nothing writable
#      but /tmp;
#   3. the image with the tiny model baked in (MODEL_DIR_IN_CONTEXT), isolated, nothing mounted;
#   each ended by `docker stop` (SIGTERM), which must end it with exit status 0 within the 30 s grace period.
# Everything it starts (containers, dockerd, the baked image, the linked wheels) is removed on exit, also on
# failure. Logs (dockerd, build) stay in build/docker-smoke/. The base image and build cache stay, so a second
# run is quick.
#
# Environment: DOCKER (default /usr/bin/docker: Debian's CLI, whose BuildKit is built in), SMOKE_IMAGE (default
# clip-sagemaker:ci), SMOKE_BASE_IMAGE (default local/bookworm:base, made here when missing; any other is
# pulled by the build), SMOKE_LOCAL_WHEELS=0 (let pip download everything from PyPI), SMOKE_WHEEL_CACHE (where
# wheels the host lacks are kept; default /var/cache/clip-sagemaker-ci/wheels), PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# It sets REPO, DOCKER, BASE_IMAGE, PY, LOGS, WORK and DOCKERD_PID, shared with the host_* steps.
source .ci/docker_host.sh

IMAGE="${SMOKE_IMAGE:-clip-sagemaker:ci}"
BAKED_IMAGE="$IMAGE-baked"
TINY_CONFIG="$REPO/tests/fixtures/tiny_open_clip_config.json"
PIP_CA="/etc/ssl/certs/ca-certificates.crt"
GRACE_S=30            # SageMaker: SIGTERM, then SIGKILL 30 s later
READY_TIMEOUT_S=180   # SageMaker allows 4 minutes
BUILD_TIMEOUT_S=3600
export DOCKER_BUILDKIT=1

WHEEL_CACHE="${SMOKE_WHEEL_CACHE:-/var/cache/clip-sagemaker-ci/wheels}"
MODEL="$REPO/docker/smoke-model"   # inside the build context, for the baked-model build
RUN_ID="clip-smoke-$$"
BAKED_BUILT=0
CONTAINERS=()
TIMINGS=()
START_S=$SECONDS

say() { printf '%s\n' "$*"; }
step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'docker_smoke: FAILED: %s\n' "$*" >&2; exit 1; }
# timed NAME COMMAND...: runs a step and records how long it took.
timed() {
  local name="$1" t0=$SECONDS
  shift
  step "$name"
  "$@"
  TIMINGS+=("$(printf '  %-50s %5d s' "$name" $((SECONDS - t0)))")
}

cleanup() {
  local status=$? c
  set +e
  trap - EXIT INT TERM
  if [ "$status" -ne 0 ]; then
    printf '\ndocker_smoke: FAILED with exit status %s; diagnostics:\n' "$status" >&2
    for c in "${CONTAINERS[@]}"; do
      say "--- docker logs $c (last 40 lines)" >&2
      "$DOCKER" logs --tail 40 "$c" >&2 2>&1
    done
    if [ -n "$DOCKERD_PID" ] && [ -f "$LOGS/dockerd.log" ]; then
      say "--- $LOGS/dockerd.log (last 15 lines)" >&2
      tail -n 15 "$LOGS/dockerd.log" >&2
    fi
  fi
  step "cleaning up"
  for c in "${CONTAINERS[@]}"; do
    "$DOCKER" rm -f "$c" >/dev/null 2>&1 && say "removed container $c"
  done
  if [ "$BAKED_BUILT" = 1 ]; then
    "$DOCKER" image rm "$BAKED_IMAGE" >/dev/null 2>&1 && say "removed image $BAKED_IMAGE"
  fi
  find "$REPO/docker/wheels" -maxdepth 1 -name '*.whl' -delete 2>/dev/null
  rm -rf "$MODEL"
  if [ -n "$WORK" ]; then
    host_unmount_under "$WORK"
    rm -rf --one-file-system "$WORK"
  fi
  host_stop_dockerd
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- steps ------------------------------------------------------------------------------------------------

lint_dockerfile() {
  host_install_hadolint
  local bindir
  bindir="$(dirname "$PY")"
  "$bindir/hadolint" --version
  "$bindir/hadolint" Dockerfile
  say "hadolint: no findings"
}

# The wheels pip on this host would install for requirements.txt (the image is the same Debian and Python),
# in docker/wheels/, which the Dockerfile bind-mounts for pip: with all of them there, the build installs
# without the index (.ci/gather_wheels.py links them, and downloads once into WHEEL_CACHE what the host lacks).
link_local_wheels() {
  find docker/wheels -maxdepth 1 -name '*.whl' -delete
  if [ "${SMOKE_LOCAL_WHEELS:-1}" = 0 ]; then
    say "SMOKE_LOCAL_WHEELS=0: pip in the build downloads everything from PyPI"
    return
  fi
  if ! "$PY" -m pip install --dry-run --ignore-installed --quiet --disable-pip-version-check \
      --report "$WORK/pip-report.json" -r requirements.txt >"$LOGS/pip-report.log" 2>&1; then
    say "pip could not resolve requirements.txt here: the build downloads everything (see $LOGS/pip-report.log)"
    return
  fi
  mkdir -p "$WHEEL_CACHE"
  if ! "$PY" .ci/gather_wheels.py "$WORK/pip-report.json" docker/wheels "$WHEEL_CACHE"
  then
    find docker/wheels -maxdepth 1 -name '*.whl' -delete
    say "could not gather every wheel: the build installs from PyPI"
  fi
}

build_image() {
  local tag="$1" secret=() log
  shift
  log="$LOGS/build-${tag//[:\/]/_}.log"
  [ -s "$PIP_CA" ] && secret=(--secret "id=pipca,src=$PIP_CA")
  say "DOCKER_BUILDKIT=1 $DOCKER build ${secret[*]} --build-arg BASE_IMAGE=$BASE_IMAGE $* -t $tag . (log: $log)"
  if ! timeout "$BUILD_TIMEOUT_S" "$DOCKER" build --progress=plain "${secret[@]}" \
      --build-arg "BASE_IMAGE=$BASE_IMAGE" "$@" -t "$tag" . >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    fail "docker build of $tag"
  fi
  # The build's steps, with their times and what came from the cache.
  grep -E '^#[0-9]+ (\[|DONE|CACHED|exporting|writing|naming|transferring context: [0-9.]+[kMG]?B done)' "$log" \
    | grep -vE '^#[0-9]+ \[internal\]' | sed 's/^/  /' || true
  if grep -qE '^#[0-9]+ [0-9.]+ installed from docker/wheels alone' "$log"; then
    say "  pip installed from docker/wheels alone (local disk, no index)"
  elif grep -qE '^#[0-9]+ [0-9.]+ +Downloading torch-' "$log"; then
    say "  pip downloaded torch from the index"
  fi
}

make_tiny_model() {
  # The tests' tiny model (32-dimensional embeddings, 13.5 MB), which smoke_checks.py's answers assume.
  rm -rf "$MODEL"
  PYTHONPATH="$REPO/container" HF_HUB_OFFLINE=1 "$PY" -m clip_sagemaker.model_files tiny-test \
    --config "$TINY_CONFIG" --seed 0 --out "$MODEL"
  # The container runs as uid 1000: the mounted model must be readable by others.
  chmod 0755 "$MODEL"
  chmod 0644 "$MODEL"/*
  ls -l "$MODEL"
}

check_image_config() {
  local user label multi_models cmd entrypoint
  user="$("$DOCKER" image inspect -f '{{.Config.User}}' "$IMAGE")"
  label="$("$DOCKER" image inspect -f '{{index .Config.Labels "com.amazonaws.sagemaker.capabilities.accept-bind-to-port"}}' "$IMAGE")"
  multi_models="$("$DOCKER" image inspect -f '{{index .Config.Labels "com.amazonaws.sagemaker.capabilities.multi-models"}}' "$IMAGE")"
  cmd="$("$DOCKER" image inspect -f '{{json .Config.Cmd}}' "$IMAGE")"
  entrypoint="$("$DOCKER" image inspect -f '{{json .Config.Entrypoint}}' "$IMAGE")"
  [ "$user" = "1000:1000" ] || fail "image user is '$user', expected 1000:1000"
  [ "$label" = "true" ] || fail "label accept-bind-to-port is '$label'"
  [ "$multi_models" = "true" ] || fail "label multi-models is '$multi_models'"
  [ "$cmd" = '["serve"]' ] || fail "CMD is $cmd"
  [ "$entrypoint" = "null" ] || fail "ENTRYPOINT is $entrypoint: SageMaker's 'serve' argument must replace CMD"
  say "user $user, labels accept-bind-to-port=$label multi-models=$multi_models, CMD $cmd, no ENTRYPOINT"
  # Neither the proxy CA (a build secret) nor the local wheels (a bind mount) may be in the image.
  if "$DOCKER" history --no-trunc "$IMAGE" | grep -q 'BEGIN CERTIFICATE'; then fail "a certificate in the image history"; fi
  if "$DOCKER" image inspect -f '{{json .Config.Env}}' "$IMAGE" | grep -qiE 'PIP_CERT|PROXY'; then
    fail "pip or proxy settings in the image's environment"
  fi
  "$DOCKER" run --rm --network none "$IMAGE" sh -c \
    'test ! -e /run/secrets/pipca && test -z "$(ls -A /mnt/wheels 2>/dev/null)" && test -z "$(ls /opt/venv/pip.conf /etc/pip.conf 2>/dev/null)"' \
    || fail "a build secret, wheel or pip configuration was left in the image"
  say "no secret, proxy CA, pip configuration or local wheel in the image"
}

# wait_ready CONTAINER PROBE...: runs PROBE until it succeeds, while the container is running.
wait_ready() {
  local container="$1" t0=$SECONDS
  shift
  while ! "$@" >/dev/null 2>&1; do
    if [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$container")" != true ]; then
      fail "$container exited before it was ready"
    fi
    [ $((SECONDS - t0)) -lt "$READY_TIMEOUT_S" ] || fail "$container not ready within $READY_TIMEOUT_S s"
    sleep 0.5
  done
  say "$container: /ping 200 after $((SECONDS - t0)) s"
}

inside_ping() {
  "$DOCKER" exec "$1" python3 -c \
    'import urllib.request; urllib.request.urlopen("http://127.0.0.1:8080/ping", timeout=2)'
}

# curl_check KIND METHOD URL [PAYLOAD]: one request from the host, its answer checked by smoke_checks.py.
curl_check() {
  local kind="$1" method="$2" url="$3" payload="${4:-}" code summary args=()
  [ -n "$payload" ] && args=(-H 'Content-Type: application/json' --data-binary "@local_test/payloads/$payload")
  code="$(curl -sS -X "$method" -o "$WORK/body.json" -w '%{http_code}' -H 'Accept: application/json' \
    "${args[@]}" "$url")"
  [ "$code" = 200 ] || fail "$method $url${payload:+ ($payload)}: HTTP $code: $(head -c 500 "$WORK/body.json")"
  summary="$("$PY" .ci/smoke_checks.py validate "$kind" "$WORK/body.json" ${SOURCE:+"$SOURCE"})" \
    || fail "$method $url${payload:+ ($payload)}: the answer is wrong"
  say "  ok  curl $method ${url#http://127.0.0.1:*/}${payload:+ ($payload)}: $summary"
}

check_uids() {
  local uids
  uids="$("$DOCKER" exec "$1" sh -c 'for p in /proc/[0-9]*; do stat -c %u "$p"; done' | sort -u | tr '\n' ' ')"
  [ "$uids" = "1000 " ] || fail "$1: processes run as uid(s) $uids, expected only 1000"
  say "  ok  every process in $1 runs as uid 1000 (model-server), PID 1: $("$DOCKER" exec "$1" sh -c 'tr "\0" " " </proc/1/cmdline')"
}

# stop_cleanly CONTAINER: docker stop (SIGTERM, SIGKILL after the grace period) must end it with status 0.
stop_cleanly() {
  local container="$1" t0 elapsed code
  t0="$(date +%s%N)"
  "$DOCKER" stop -t "$GRACE_S" "$container" >/dev/null
  elapsed="$(( ($(date +%s%N) - t0) / 1000000 ))"
  code="$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$container")"
  [ "$code" = 0 ] || fail "$container: exit status $code after docker stop (137 = killed after the grace period)"
  [ "$elapsed" -lt $((GRACE_S * 1000)) ] || fail "$container: took $elapsed ms to stop"
  say "  ok  docker stop (SIGTERM): $container exited with status 0 after $elapsed ms"
}

run_published() {
  local c="$RUN_ID-published" port base
  CONTAINERS+=("$c")
  "$DOCKER" run -d --name "$c" -p 127.0.0.1::8080 -e CLIENT_TIMEOUT=3 -v "$MODEL:/opt/ml/model:ro" "$IMAGE" serve >/dev/null
  port="$("$DOCKER" port "$c" 8080/tcp | head -n 1 | sed 's/.*://')"
  base="http://127.0.0.1:$port"
  say "docker run -d -p 127.0.0.1:$port:8080 -e CLIENT_TIMEOUT=3 -v $MODEL:/opt/ml/model:ro $IMAGE serve"
  wait_ready "$c" curl -fsS "$base/ping"
  SOURCE="model directory /opt/ml/model"
  curl_check ping GET "$base/ping"
  curl_check execparams GET "$base/execution-parameters"
  curl_check info GET "$base/info"
  curl_check embed POST "$base/invocations" embed_texts.json
  curl_check rank POST "$base/invocations" rank_texts_for_image.json
  curl_check classify POST "$base/invocations" classify_labelled.json
  curl_check seed003 POST "$base/invocations" seed003_classify.json
  check_uids "$c"
  "$PY" local_test/slow_clients.py --url "$base" --clients 200 --seconds 8 --cut-after 5 \
    >"$WORK/slow.json" 2>"$WORK/slow.txt" || fail "slow clients: $(cat "$WORK/slow.txt" "$WORK/slow.json")"
  say "  $(cat "$WORK/slow.txt")"
  # Read from a file: `grep -m 1` on a pipe would end `docker logs` with SIGPIPE, which pipefail counts.
  "$DOCKER" logs "$c" >"$WORK/published.log" 2>&1
  grep -q '^serve: .*nginx in front' "$WORK/published.log" || fail "$c: nginx is not in front"
  say "  startup line: $(grep -m 1 '^serve: ' "$WORK/published.log")"
  stop_cleanly "$c"
}

# run_isolated NAME SOURCE [DOCKER_RUN_ARGS...]: SageMaker network isolation, checked from inside.
run_isolated() {
  local c="$RUN_ID-$1" source="$2" image="$3"
  shift 3
  CONTAINERS+=("$c")
  say "docker run -d --network none --read-only --tmpfs /tmp $* $image serve"
  "$DOCKER" run -d --name "$c" --network none --read-only --tmpfs /tmp \
    -v "$REPO/.ci/smoke_checks.py:/smoke/smoke_checks.py:ro" -v "$REPO/local_test/payloads:/smoke/payloads:ro" \
    "$@" "$image" serve >/dev/null
  wait_ready "$c" inside_ping "$c"
  "$DOCKER" exec "$c" python3 /smoke/smoke_checks.py http http://127.0.0.1:8080 /smoke/payloads --source "$source" \
    || fail "$c: the checks inside the container failed"
  if "$DOCKER" exec "$c" python3 -c 'import socket; socket.create_connection(("pypi.org", 443), timeout=3)' 2>/dev/null; then
    fail "$c reached the network"
  fi
  "$DOCKER" exec "$c" sh -c '! touch /opt/ml/code/x 2>/dev/null && ! touch /x 2>/dev/null && touch /tmp/x' \
    || fail "$c: the root file system is writable, or /tmp is not"
  say "  ok  no network; / and /opt/ml/code read-only, /tmp writable"
  check_uids "$c"
  stop_cleanly "$c"
}

smoke_isolated() {
  run_isolated isolated "model directory /opt/ml/model" "$IMAGE" -v "$MODEL:/opt/ml/model:ro"
}

build_and_smoke_baked() {
  build_image "$BAKED_IMAGE" --build-arg "MODEL_DIR_IN_CONTEXT=${MODEL#"$REPO"/}"
  BAKED_BUILT=1
  run_isolated baked "baked-in model directory /opt/baked-model" "$BAKED_IMAGE"
}

report_size() {
  local bytes
  bytes="$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE")"
  say "$IMAGE: $(awk -v b="$bytes" 'BEGIN {printf "%.2f GB (%.0f bytes)", b / 1e9, b}'); its layers:"
  "$DOCKER" history --format '{{.Size}}\t{{.CreatedBy}}' "$IMAGE" \
    | awk -F '\t' '$1 != "0B" {printf "  %8s  %s\n", $1, substr($2, 1, 100)}'
  say "base image $BASE_IMAGE: $("$DOCKER" image inspect -f '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}')"
}

# --- main -------------------------------------------------------------------------------------------------

mkdir -p "$LOGS"
WORK="$(mktemp -d /var/tmp/clip-smoke.XXXXXX)"
timed "lint the Dockerfile (hadolint)" lint_dockerfile
timed "install the Docker engine and debootstrap" host_install_engine
timed "start dockerd" host_start_dockerd
timed "base image $BASE_IMAGE" host_make_base_image
timed "link the host's wheels into docker/wheels" link_local_wheels
timed "build $IMAGE" build_image "$IMAGE"
timed "check the image's configuration" check_image_config
timed "make the tiny model" make_tiny_model
timed "run: port on 127.0.0.1, model mounted read-only" run_published
timed "run: --network none --read-only --tmpfs /tmp" smoke_isolated
timed "build and run with the model baked in" build_and_smoke_baked
timed "image size" report_size

step "docker smoke test passed in $((SECONDS - START_S)) s"
printf '%s\n' "${TIMINGS[@]}"
