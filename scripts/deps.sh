#!/bin/bash
# Installs what the build and the test suites need on a fresh Debian/Ubuntu machine.
# Idempotent: only missing packages are installed. Needs root (apt-get).
set -e
need=()
have() { command -v "$1" >/dev/null 2>&1; }
# same_as_systemd PKG: PKG pinned to the installed systemd's version when the archive still has
# it. Packages built from systemd's source (systemd-resolved, systemd-container) depend on
# exactly that version of libsystemd-shared: unpinned, installing one would upgrade systemd
# itself as a side effect. Needs apt's lists (apt-get update) to find the version.
same_as_systemd() {
	local v
	v=$(dpkg-query -W -f='${Version}' systemd 2>/dev/null || true)
	if [[ -n $v ]] && apt-cache madison "$1" | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -qxF "$v"; then
		echo "$1=$v"
	else
		echo "$1"
	fi
}

# Debian's systemd-resolved package takes over the host's DNS when installed: its postinst
# moves /etc/resolv.conf to /etc/.resolv.conf.systemd-resolved.bak and puts a symlink to
# resolved's stub (127.0.0.53) in its place, and enables and starts the service. This machine
# only needs the binaries, for a resolved that the test starts in a namespace of its own, so:
# no service starts (policy-rc.d 101, which deb-systemd-invoke obeys), the unit left disabled,
# and /etc/resolv.conf put back exactly (the same inode when the postinst's backup is there)
# and checked byte for byte, with its mode and owner.
install_resolved_keeping_host_dns() {
	local saved policy=/usr/sbin/policy-rc.d own_policy='' pkg rc=0
	saved=$(mktemp -d /tmp/smolmix-deps.XXXXXX)
	[[ -e /etc/resolv.conf || -L /etc/resolv.conf ]] && cp -a /etc/resolv.conf "$saved/resolv.conf"
	stat_of() { { stat -c '%F %a %u %g %s' "$1"; readlink "$1"; sha256sum <"$1"; } 2>/dev/null; }
	local before; before=$(stat_of /etc/resolv.conf)
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\n# smolmix-vpn scripts/deps.sh: no service starts while it installs\nexit 101\n' >"$policy"
		chmod 0755 "$policy"
		own_policy=1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# resolved must match the installed systemd exactly (same_as_systemd).
	pkg=$(same_as_systemd systemd-resolved)
	echo "installing: $pkg (the host's /etc/resolv.conf is kept as it is)"
	apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null || rc=$?
	[[ -n $own_policy ]] && rm -f "$policy"
	if [[ $(stat_of /etc/resolv.conf) != "$before" ]]; then
		if [[ -f /etc/.resolv.conf.systemd-resolved.bak && -f $saved/resolv.conf ]] &&
			cmp -s /etc/.resolv.conf.systemd-resolved.bak "$saved/resolv.conf"; then
			mv -f /etc/.resolv.conf.systemd-resolved.bak /etc/resolv.conf
		else
			rm -f /etc/resolv.conf
			[[ ! -e $saved/resolv.conf && ! -L $saved/resolv.conf ]] || cp -a "$saved/resolv.conf" /etc/resolv.conf
		fi
	fi
	# Offline (no systemd running, or not asked to reload): only the enablement links go.
	systemctl disable --no-reload systemd-resolved.service >/dev/null 2>&1 || true
	if [[ $(stat_of /etc/resolv.conf) != "$before" ]]; then
		echo "deps.sh: /etc/resolv.conf differs after installing systemd-resolved; the original is in $saved" >&2
		return 1
	fi
	rm -rf "$saved"
	return $rc
}
have ip       || need+=(iproute2)
have nft      || need+=(nftables)
have dnsmasq  || need+=(dnsmasq-base)
have curl     || need+=(curl)
have dig      || need+=(dnsutils)
have iperf3   || need+=(iperf3)
have ping     || need+=(iputils-ping)
have ss       || need+=(iproute2)
have setpriv  || need+=(util-linux)
have strace   || need+=(strace)      # netns-tests/dns.sh: the fsyncs of resolv.conf and its backup
have python3  || need+=(python3)
have cc       || need+=(build-essential)
have dbus-daemon || need+=(dbus)
# netns-tests/resolved.sh runs a real systemd-resolved in a namespace of its own.
resolved=()
[[ -x /lib/systemd/systemd-resolved ]] && have resolvectl || resolved=(systemd-resolved)
# scripts/package.sh: builds the .deb, installs it into a scratch root and reads it as a user.
have dpkg-deb || need+=(dpkg)
have gzip     || need+=(gzip)
have man      || need+=(man-db)
have col      || need+=(bsdextrautils)
have systemd-analyze || need+=(systemd)
[[ -f /usr/share/bash-completion/bash_completion ]] || need+=(bash-completion)
# netns-tests/systemd.sh: a Debian root made with mmdebstrap (from the Debian archive), booted
# with systemd-nspawn (systemd-container, at the installed systemd's version).
have mmdebstrap || need+=(mmdebstrap)
pinned=()
have systemd-nspawn || pinned+=(systemd-container)
if ((${#need[@]} + ${#pinned[@]})); then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	for p in "${pinned[@]}"; do need+=("$(same_as_systemd "$p")"); done
	echo "installing: ${need[*]}"
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ((${#resolved[@]})); then
	install_resolved_keeping_host_dns
fi
if ! command -v cargo >/dev/null 2>&1; then
	echo "cargo not found: install Rust with https://rustup.rs (stable >= 1.85)" >&2
	exit 1
fi
