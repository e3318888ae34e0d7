#!/usr/bin/env bash
# docker/check-packaging.sh [--image] — checks the deployment files without a Docker engine or
# a cluster (scripts/test.sh runs it without --image):
#   1. docker/pipeline.toml and the Kubernetes ConfigMap's pipeline.toml pass `flumen validate`
#   2. docker/flumen.service passes `systemd-analyze verify`
#   3. docker/kubernetes.yaml passes kubernetes-validate --strict (the Kubernetes schemas, from
#      PyPI; installed into a venv under the cache directory)
# With --image, also the image's runtime stage, by hand (minutes; needs root and Debian's
# mirrors): the builder's `cargo build --release --locked --bin flumen` on this host, a
# debootstrap of the runtime's release with the Dockerfile's runtime packages, the user
# 10001, and the binary run in it by that user (chroot): `--version`, `validate`, and `ldd`
# finding every library.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cache="${FLUMEN_CACHE:-$HOME/.cache/flumen}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
die() { echo "check-packaging: FAILED: $*" >&2; exit 1; }
say() { echo "check-packaging: $*"; }

flumen="$CARGO_TARGET_DIR/debug/flumen"
[[ -x "$flumen" ]] || cargo build --bin flumen
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# 1. the configs
export FLUMEN_INSTANCE_ID=check FLUMEN_ADMIN_TOKEN=check-packaging-token-0123456789 KAFKA_BOOTSTRAP=127.0.0.1:19092
"$flumen" validate --config docker/pipeline.toml >/dev/null || die "docker/pipeline.toml does not validate"
venv="$cache/venv-packaging"
if [[ ! -x "$venv/bin/kubernetes-validate" ]]; then
  command -v python3 >/dev/null || die "python3 is needed for kubernetes-validate (Debian: apt-get install python3-venv)"
  python3 -m venv "$venv" || die "cannot create a Python venv (Debian: apt-get install python3-venv)"
  "$venv/bin/pip" install -q kubernetes-validate==1.37.0 || die "cannot install kubernetes-validate from PyPI"
fi
"$venv/bin/python" - docker/kubernetes.yaml "$work/k8s-pipeline.toml" <<'PY'
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc.get("kind") == "ConfigMap":
        open(sys.argv[2], "w").write(doc["data"]["pipeline.toml"])
PY
"$flumen" validate --config "$work/k8s-pipeline.toml" >/dev/null || die "the ConfigMap's pipeline.toml does not validate"
say "configs validate"

# 2. the systemd unit (its ExecStart pointed at the binary built here: verify checks it exists)
command -v systemd-analyze >/dev/null || die "systemd-analyze not found (Debian: apt-get install systemd)"
sed "s|/usr/local/bin/flumen|$flumen|" docker/flumen.service > "$work/flumen.service"
out="$(systemd-analyze verify "$work/flumen.service" 2>&1)" || die "systemd-analyze verify: $out"
[[ -z "$out" ]] || die "systemd-analyze verify warns: $out"
say "systemd unit verifies"

# 3. the Kubernetes manifests
"$venv/bin/kubernetes-validate" --strict --quiet docker/kubernetes.yaml || die "docker/kubernetes.yaml does not validate"
say "Kubernetes manifests validate (strict, Kubernetes 1.37 schemas)"

[[ "${1:-}" == "--image" ]] || exit 0

# 4. the image's runtime stage, assembled without Docker
[[ "$(id -u)" -eq 0 ]] || die "--image needs root (debootstrap, chroot)"
command -v debootstrap >/dev/null || apt-get install -y -qq --no-install-recommends debootstrap >/dev/null \
  || die "debootstrap is not installed and cannot be"
release="$(sed -n 's/^FROM debian:\([a-z]*\)-slim$/\1/p' docker/Dockerfile)"
packages="$(sed -n '/^FROM debian/,$p' docker/Dockerfile | sed -n 's/^ *\(lib[a-z0-9+-]*\( lib[a-z0-9+-]*\)*.*ca-certificates\) *\\$/\1/p')"
[[ -n "$release" && -n "$packages" ]] || die "cannot read the runtime stage's release and packages from docker/Dockerfile"
say "builder: cargo build --release --locked --bin flumen"
cargo build --release --locked --bin flumen
rootfs="$cache/rootfs-$release"
if [[ ! -x "$rootfs/usr/bin/apt-get" ]]; then
  say "debootstrap $release (minbase) into $rootfs"
  rm -rf "$rootfs"
  debootstrap --variant=minbase "$release" "$rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap $release"; }
fi
say "runtime packages: $packages"
# shellcheck disable=SC2086 # the package list is words
chroot "$rootfs" /bin/sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends $packages >/dev/null" \
  || die "installing the runtime packages in the $release root"
chroot "$rootfs" /bin/sh -c 'getent group flumen >/dev/null || groupadd --system --gid 10001 flumen;
  getent passwd flumen >/dev/null || useradd --system --uid 10001 --gid flumen --home-dir /var/lib/flumen --shell /usr/sbin/nologin flumen;
  mkdir -p /var/lib/flumen /etc/flumen && chown flumen:flumen /var/lib/flumen'
install -m 0755 "$CARGO_TARGET_DIR/release/flumen" "$rootfs/usr/local/bin/flumen"
cp docker/pipeline.toml "$rootfs/etc/flumen/pipeline.toml"
missing="$(chroot "$rootfs" ldd /usr/local/bin/flumen | grep 'not found' || true)"
[[ -z "$missing" ]] || die "libraries the runtime stage lacks: $missing"
version="$(chroot --userspec=10001:10001 "$rootfs" /usr/local/bin/flumen --version)" || die "flumen --version in the runtime root"
chroot --userspec=10001:10001 "$rootfs" /usr/bin/env FLUMEN_INSTANCE_ID=0 FLUMEN_ADMIN_TOKEN="$FLUMEN_ADMIN_TOKEN" \
  /usr/local/bin/flumen validate --config /etc/flumen/pipeline.toml >/dev/null || die "flumen validate in the runtime root"
say "runtime stage ($release-slim packages, user 10001): $version; validate ok; every library found"
