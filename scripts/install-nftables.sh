#!/usr/bin/env bash
# nftables for the LAN suite (tests/tests/lan.rs injects partitions with `nft` inside network
# namespaces): installs Debian's package if `nft` is missing and we are root; otherwise says how.
set -euo pipefail
command -v nft >/dev/null && exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "install-nftables.sh: nft is missing and I am not root; the LAN suite needs root anyway:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends nftables iproute2" >&2
  exit 0
fi
echo "install-nftables.sh: installing nftables with apt-get" >&2
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nftables iproute2
