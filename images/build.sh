#!/usr/bin/env bash
# Build Adept's container images (`make image`):
#
#   images/build.sh [cpu|cuda|operator|all]        (default: cpu and operator)
#
#   REGISTRY   image repository prefix            (default ghcr.io/adept-project)
#   TAG        image tag                          (default: appVersion from charts/adept/Chart.yaml)
#   BUILDER    docker | podman                    (default: docker when a daemon answers, else podman)
#   PUSH=1     push each image after building it (log in to the registry first)
#
# Images: $REGISTRY/adept:$TAG (CPU), $REGISTRY/adept:$TAG-cuda (CUDA), $REGISTRY/adept-operator:$TAG —
# the names the chart's values.yaml uses by default.
#
# With Docker this is a plain `docker build`. Without a daemon it uses podman; where no image registry is
# reachable (these CI machines) it builds a local stand-in for python:3.11-slim-bookworm with mmdebstrap and
# passes it with `--from`, so the Containerfiles keep the public base that users pull. Build-time access to
# the package registry (CA bundle, pip settings, local wheel folders) is arranged here, never in the
# Containerfiles.
set -euo pipefail
cd "$(dirname "$0")/.."

REGISTRY=${REGISTRY:-ghcr.io/adept-project}
TAG=${TAG:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/adept/Chart.yaml)}
BASE_IMAGE=${BASE_IMAGE:-localhost/adept-base:bookworm-python3.11}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(cpu operator)
[ "${variants[*]}" != all ] || variants=(cpu cuda operator)

image_name() {
  case $1 in
    cpu) echo "$REGISTRY/adept:$TAG" ;;
    cuda) echo "$REGISTRY/adept:$TAG-cuda" ;;
    operator) echo "$REGISTRY/adept-operator:$TAG" ;;
    *) echo "unknown image variant '$1' (use cpu, cuda, operator or all)" >&2; exit 2 ;;
  esac
}

containerfile() {
  case $1 in
    cpu) echo images/Containerfile ;;
    *) echo "images/Containerfile.$1" ;;
  esac
}

if [ -z "${BUILDER:-}" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then BUILDER=docker; else BUILDER=podman; fi
fi

build_docker() {
  docker build -f "$(containerfile "$1")" -t "$(image_name "$1")" .
}

# A local equivalent of python:3.11-slim-bookworm (Debian's python3.11 instead of a source build), built once.
ensure_base() {
  if podman image exists "$BASE_IMAGE" && [ -z "${REBUILD_BASE:-}" ]; then
    return
  fi
  command -v mmdebstrap >/dev/null || { echo "no registry-free base without mmdebstrap (apt-get install mmdebstrap)" >&2; exit 1; }
  local tmp
  tmp=$(mktemp -d)
  echo "== building $BASE_IMAGE with mmdebstrap (~1 min)"
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$tmp/base.tar" "$DEBIAN_MIRROR"
  podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    "$tmp/base.tar" "$BASE_IMAGE" >/dev/null
  rm -rf "$tmp"
}

# pip inside the build sees this machine's index, CA bundle and local wheel folders (read-only), and nothing else.
PIP_MOUNTS=()
TORCH_ARGS=()
prepare_pip() {
  local conf=$1
  python3 - "$conf" >"$conf.mounts" <<'EOF'
import os, shlex, subprocess, sys
from pathlib import Path
items = {}
out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
for line in out.splitlines():
    key, _, value = line.partition("=")
    name = key.split(".", 1)[-1]
    if name in ("index-url", "extra-index-url", "find-links", "cert", "trusted-host", "default-timeout"):
        items[name] = value.strip().strip("'\"")
mounts, lines = [], ["[global]"]
for name, value in items.items():
    if name in ("index-url", "extra-index-url", "find-links"):
        kept = []
        for v in value.split():
            local = Path(v.removeprefix("file://"))
            if "://" in v and not v.startswith("file://"):
                kept.append(v)
            elif os.environ.get("REMOTE_ONLY"):
                continue  # the CUDA image: a local CPU torch wheel would win over PyPI's CUDA build
            elif local.exists():  # a local index or wheel folder: mounted at the same path
                kept.append(v)
                # A local "simple" index links to files beside it (../files): mount its parent.
                mounts.append(str(local.parent if name != "find-links" else local))
        value = " ".join(kept)
    elif name == "cert" and Path(value).is_file() and not value.startswith("/etc/ssl/certs/"):
        mounts.append(value)
    if value:
        lines.append(f"{name} = {value}")
Path(sys.argv[1]).write_text("\n".join(lines) + "\n")
print("\n".join(sorted(set(mounts))))
EOF
  TORCH_ARGS=()
  PIP_MOUNTS=(-v /etc/ssl/certs:/etc/ssl/certs:ro -v "$conf:/etc/pip.conf:ro")
  local m torch_local=
  while read -r m; do
    [ -n "$m" ] || continue
    PIP_MOUNTS+=(-v "$m:$m:ro")
    compgen -G "$m/torch-2.13.0+cpu-*.whl" >/dev/null && torch_local=1
  done <"$conf.mounts"
  # The CPU torch wheel is in a local folder here: do not reach for PyTorch's index.
  [ -z "$torch_local" ] || TORCH_ARGS=(--build-arg TORCH_INDEX_URL=)
}

build_podman() {
  local variant=$1 from=()
  # Pull the public base when a registry answers; otherwise substitute the local one.
  if ! podman image exists docker.io/library/python:3.11-slim-bookworm \
     && ! podman pull --quiet docker.io/library/python:3.11-slim-bookworm >/dev/null 2>&1; then
    ensure_base
    from=(--from "$BASE_IMAGE")
  fi
  local extra=()
  [ "$variant" != cpu ] || extra=("${TORCH_ARGS[@]}")
  podman build --isolation=chroot --network=host --layers \
    "${from[@]}" "${PIP_MOUNTS[@]}" "${extra[@]}" \
    -f "$(containerfile "$variant")" -t "$(image_name "$variant")" .
}

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
for variant in "${variants[@]}"; do
  # The CUDA image takes its wheels from the remote index only: local folders here hold the CPU torch build,
  # whose local version (2.13.0+cpu) pip would prefer to PyPI's CUDA 2.13.0.
  [ "$BUILDER" = docker ] || REMOTE_ONLY=$([ "$variant" != cuda ] || echo 1) prepare_pip "$workdir/pip-$variant.conf"
  name=$(image_name "$variant")
  echo "== $name ($BUILDER, $(containerfile "$variant"))"
  start=$SECONDS
  "build_$BUILDER" "$variant"
  size=$("$BUILDER" image inspect --format '{{.Size}}' "$name")
  echo "== built $name in $((SECONDS - start)) s, $((size / 1024 / 1024)) MiB"
  [ -z "${PUSH:-}" ] || "$BUILDER" push "$name"
done
