#!/usr/bin/env bash
# Installs Debian packages, only those missing: the ones named on the command line, or
# by default those the lab and the tests use.
set -euo pipefail
want=("$@")
# iptables: the lab's controller-partition fault; prometheus (and its promtool): the
# metrics endpoint's lab test and the example alert rules' check; chromium: the
# dashboard's browser tests.
[ ${#want[@]} -eq 0 ] && want=(ipmitool snmptrapd iptables prometheus chromium)
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
