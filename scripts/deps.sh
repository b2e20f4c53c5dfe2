#!/bin/bash
# Installs what the build and the test suites need on a fresh Debian/Ubuntu machine.
# Idempotent: only missing packages are installed. Needs root (apt-get).
set -e
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip       || need+=(iproute2)
have nft      || need+=(nftables)
have dnsmasq  || need+=(dnsmasq-base)
have curl     || need+=(curl)
have dig      || need+=(dnsutils)
have iperf3   || need+=(iperf3)
have ping     || need+=(iputils-ping)
have ss       || need+=(iproute2)
have setpriv  || need+=(util-linux)
have python3  || need+=(python3)
have cc       || need+=(build-essential)
# scripts/package.sh: builds the .deb, installs it into a scratch root and reads it as a user.
have dpkg-deb || need+=(dpkg)
have gzip     || need+=(gzip)
have man      || need+=(man-db)
have col      || need+=(bsdextrautils)
have systemd-analyze || need+=(systemd)
[[ -f /usr/share/bash-completion/bash_completion ]] || need+=(bash-completion)
if ((${#need[@]})); then
	echo "installing: ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
	echo "cargo not found: install Rust with https://rustup.rs (stable >= 1.85)" >&2
	exit 1
fi
