#!/usr/bin/env bash
# Builds misim's container images with no registry: a Debian base made with debootstrap and imported,
# the misim binary built on this machine, and the VM image's Python wheels downloaded on this machine.
#
# Produces (never pushed anywhere):
#   local/misim-base:bookworm    debootstrap --variant=minbase bookworm, imported under a project-local
#                                name (no machine-wide name such as debian:bookworm-slim is touched);
#                                the Dockerfiles take it as build argument BASE_IMAGE
#   local/misim:latest           Dockerfile.prebuilt + target/release/misim
#   local/misim-vm:latest        Dockerfile.vm + deploy/.wheels (azure-identity, PyJWT, requests)
#
# Idempotent: an existing base image is kept, wheels are fetched again only when vm/requirements.txt
# changes, cargo and docker build are incremental. Environment:
#   MISIM_BIN=path        use this misim binary instead of `cargo build --release --bin misim`
#   MISIM_DEBIAN_MIRROR   Debian mirror for debootstrap (default: URIs of /etc/apt/sources.list.d/debian.sources)
#   MISIM_REBUILD_BASE=1  make the base image again even if it exists
#   MISIM_BASE_IMAGE      name of the base image (default local/misim-base:bookworm)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
log() { printf '== %s\n' "$*"; }
base_image="${MISIM_BASE_IMAGE:-local/misim-base:bookworm}"

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

debian_mirror() {
  if [ -n "${MISIM_DEBIAN_MIRROR:-}" ]; then
    echo "$MISIM_DEBIAN_MIRROR"
    return
  fi
  local f=/etc/apt/sources.list.d/debian.sources uri=""
  if [ -r "$f" ]; then
    # first stanza whose Suites name plain bookworm (not bookworm-security)
    uri="$(awk '
      /^[[:space:]]*$/ { if (u != "" && s) { print u; exit } u = ""; s = 0; next }
      /^URIs:/ { u = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") s = 1 }
      END { if (u != "" && s) print u }' "$f" | head -n1)"
  fi
  if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
    uri="$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list)"
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

# debootstrap mounts proc/sys inside the rootfs while it works: never delete through a mount
remove_rootfs() {
  local m
  for m in dev/pts dev sys proc; do
    if mountpoint -q "$1/$m" 2>/dev/null; then umount -l "$1/$m" || true; fi
  done
  rm -rf --one-file-system "$1" "$1.log"
}

build_base() {
  if [ "${MISIM_REBUILD_BASE:-0}" != 1 ] && image_exists "$base_image"; then
    log "base image $base_image exists"
  else
    if ! command -v debootstrap >/dev/null 2>&1; then
      log "installing debootstrap"
      apt-get install -y debootstrap >/dev/null || { apt-get update >/dev/null && apt-get install -y debootstrap >/dev/null; }
    fi
    local mirror rootfs
    mirror="$(debian_mirror)"
    rootfs="$(mktemp -d /tmp/misim-rootfs.XXXXXX)"
    log "debootstrap --variant=minbase bookworm from $mirror"
    if ! nice debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1; then
      tail -n 30 "$rootfs.log" >&2
      remove_rootfs "$rootfs"
      return 1
    fi
    # what the official slim image also drops: apt lists and downloaded packages
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
    log "docker import $base_image"
    tar -C "$rootfs" -c . | docker import \
      -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      -c 'CMD ["bash"]' \
      -m "debootstrap --variant=minbase bookworm $mirror" - "$base_image" >/dev/null
    remove_rootfs "$rootfs"
  fi
  # The Dockerfiles default to FROM debian:bookworm-slim (the online build); offline, docker_build
  # passes --build-arg BASE_IMAGE=$base_image instead, so no machine-wide image name is (re)tagged.
}

fetch_wheels() {
  local req="$here/vm/requirements.txt" dest="$here/.wheels" stamp
  stamp="$(sha256sum "$req" | cut -d' ' -f1)"
  if [ -f "$dest/.stamp" ] && [ "$(cat "$dest/.stamp")" = "$stamp" ]; then
    log "wheels in deploy/.wheels are current"
    return
  fi
  log "downloading wheels for the VM image (CPython 3.11, manylinux x86_64) into deploy/.wheels"
  rm -rf "$dest"
  mkdir -p "$dest"
  # Debian bookworm's python3 is 3.11 with glibc 2.36: ask for exactly those wheels, whatever python runs here.
  python3 -m pip download --quiet --disable-pip-version-check --dest "$dest" \
    --only-binary=:all: --implementation cp --python-version 3.11 \
    --platform manylinux_2_36_x86_64 --platform manylinux_2_34_x86_64 \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64 \
    -r "$req"
  cp "$req" "$dest/requirements.txt"
  echo "$stamp" >"$dest/.stamp"
}

stage_binary() {
  local bin="${MISIM_BIN:-}"
  if [ -z "$bin" ]; then
    log "cargo build --release --bin misim"
    (cd "$root" && nice cargo build --release --quiet -p misim --bin misim)
    bin="$root/target/release/misim"
  fi
  mkdir -p "$here/.bin"
  if ! cmp -s "$bin" "$here/.bin/misim"; then
    cp "$bin" "$here/.bin/misim.tmp" && mv "$here/.bin/misim.tmp" "$here/.bin/misim"
  fi
}

docker_build() { # docker_build TAG DOCKERFILE: context deploy/, output shown only on failure
  local out
  log "docker build $1 ($2)"
  if ! out="$(nice docker build --build-arg "BASE_IMAGE=$base_image" -t "$1" -f "$here/$2" "$here" 2>&1)"; then
    printf '%s\n' "$out" | tail -n 40 >&2
    return 1
  fi
}

build_images() {
  [ -x "$here/.bin/misim" ] || { echo "deploy/.bin/misim missing: run '$0 binary' first" >&2; return 1; }
  [ -f "$here/.wheels/.stamp" ] || { echo "deploy/.wheels missing: run '$0 wheels' first" >&2; return 1; }
  docker_build local/misim:latest Dockerfile.prebuilt
  docker_build local/misim-vm:latest Dockerfile.vm
  docker run --rm --network none local/misim:latest --version
  docker run --rm --network none --entrypoint python local/misim-vm:latest \
    -c 'import azure.identity, jwt, requests; print("azure-identity", azure.identity.__version__, "pyjwt", jwt.__version__)'
}

case "${1:-all}" in
  base) build_base ;;
  wheels) fetch_wheels ;;
  binary) stage_binary ;;
  images) build_images ;;
  all)
    build_base
    fetch_wheels
    stage_binary
    build_images
    ;;
  *)
    echo "usage: $0 [all|base|wheels|binary|images]" >&2
    exit 2
    ;;
esac
