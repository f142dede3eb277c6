#!/usr/bin/env bash
# Installs the Debian 12 packages smtpgate builds and tests with (only those missing).
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  libuv1-dev libssl-dev nlohmann-json3-dev libcli11-dev catch2 libhiredis-dev
  openssl ca-certificates curl swaks libnet-ssleay-perl python3 python3-aiosmtpd
  postfix dovecot-core haproxy redis-server
  clang-14 libclang-rt-14-dev
  systemd logrotate
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}; run as root to install them" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Postfix is used only as a private test backend: no system configuration, no daemon.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
