#!/usr/bin/env bash
# scripts/setup.sh — installs what building and testing Flumen needs on a Debian machine.
# As root it installs missing Debian packages with apt-get; otherwise it lists them and fails.
# It never installs Rust (Debian's is too old for edition 2024): it checks for it and says so.
set -euo pipefail

# What each package is for:
#   build-essential, cmake, pkg-config  librdkafka (rdkafka cmake-build) and RocksDB from source
#   libclang-dev                        bindgen for librocksdb-sys
#   libssl-dev, libsasl2-dev            librdkafka's ssl and sasl features
#   zlib1g-dev                          librdkafka's libz feature
#   libcurl4-openssl-dev                librdkafka OAUTHBEARER OIDC (its ssl+sasl build includes curl)
#   openjdk-17-jre-headless, maven      the Kafka broker of scripts/kafka.sh and the S3Proxy object store
#                                       of scripts/s3.sh, fetched from Maven Central
#   curl                                scripts/s3.sh's readiness probe
# With --test (scripts/test.sh), also:
#   chromium                            the status page's test in a real headless browser
#   systemd, python3-venv               docker/check-packaging.sh: systemd-analyze verify, and a venv
#                                       for kubernetes-validate (the Kubernetes schemas, from PyPI)
#   gdb                                 the chaos suite's stacks of a daemon whose /livez fails
#   libfaketime                         the chaos suite's clock jumps (the daemon's wall clock moved)
packages=(build-essential cmake pkg-config libclang-dev libssl-dev libsasl2-dev zlib1g-dev libcurl4-openssl-dev
          openjdk-17-jre-headless maven curl)
if [[ "${1:-}" == "--test" ]]; then
  packages+=(chromium systemd python3-venv gdb libfaketime)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  if [[ "$(id -u)" -ne 0 ]]; then
    echo "setup.sh: error: missing Debian packages: ${missing[*]}" >&2
    echo "setup.sh: run as root (or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null; then
    echo "setup.sh: error: missing packages ${missing[*]} and no apt-get on this machine to install them" >&2
    exit 1
  fi
  echo "setup.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "setup.sh: error: cargo not found: install Rust 1.89 or newer with rustup (https://rustup.rs)" >&2
  exit 1
fi
rust_minor="$(rustc --version | sed -n 's/rustc 1\.\([0-9]*\).*/\1/p')"
if [[ -z "$rust_minor" || "$rust_minor" -lt 89 ]]; then
  echo "setup.sh: error: Rust 1.89 or newer is needed, found: $(rustc --version)" >&2
  exit 1
fi
for c in rustfmt clippy; do
  if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null; then rustup component add "$c" >&2
    else echo "setup.sh: error: cargo $c is missing and rustup is not here to add it" >&2; exit 1; fi
  fi
done
