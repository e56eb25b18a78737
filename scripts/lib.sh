# Shared helpers for the scripts in this directory. Source it; do not run it.

set -euo pipefail

repo_root() { cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd; }

log() { printf '==> %s\n' "$*" >&2; }

# apt_install PKG...: installs the Debian packages that are missing, quietly and idempotently.
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq -o DPkg::Lock::Timeout=300 >/dev/null
  $sudo apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}" >/dev/null
}

# require_rust: fails with a clear message when no suitable Rust toolchain is on PATH. The
# version needed is the workspace's `rust-version` (stated once, in Cargo.toml).
require_rust() {
  local want
  want="$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$(repo_root)/Cargo.toml")"
  if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found. Install Rust $want or newer (https://rustup.rs), then run this again." >&2
    exit 2
  fi
}

# free_port: prints a free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Build packages every script needs: a C compiler and pkg-config for -sys crates.
BUILD_PACKAGES=(build-essential pkg-config libssl-dev zlib1g-dev ca-certificates python3)

# What the test suite starts for real on loopback ports (later issues use all of them).
TEST_PACKAGES=(redis-server redis-sentinel redis-tools rsync vsftpd mosquitto mosquitto-clients
  nginx-light wrk aria2 curl openssl apt location libloc-database iso-codes tzdata)
