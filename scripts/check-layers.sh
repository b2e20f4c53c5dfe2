#!/bin/bash
# The layer rules the compiler cannot see inside one crate (ARCHITECTURE.md, "The stack"):
#
#   sans-IO cores   src/pipeline/ src/ipr/ src/exit/ src/link/lifecycle.rs src/link/backoff.rs
#                   src/transport/sniff* src/transport/dns_wire.rs (the directory relay's parsers)
#                   import no tokio, no sockets (std::net::*Socket, TcpStream), no clock
#                   (Instant::now, SystemTime::now), and nothing of system/, driver/, cli or
#                   transport/;
#   the library     src/tunnel/ src/transport/ src/link/ import nothing of system/, driver/ or
#                   cli (the library-only build, `--no-default-features`, would not compile
#                   either; this says where).
#
# Tests (#[cfg(test)] modules and files named tests*.rs) may use a clock. Exit 1 lists every
# violation as file:line.
#
#   scripts/check-layers.sh                       check the tree this script lives in
#   CHECK_LAYERS_ROOT=/some/copy scripts/check-layers.sh
set -e
ROOT=${CHECK_LAYERS_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$ROOT"

# Lines of the given files matching the regex, outside #[cfg(test)] modules and tests*.rs files.
# A #[cfg(test)] module runs to the end of its file here (the project keeps them last).
scan() {
	local regex=$1
	shift
	find "$@" -name '*.rs' ! -name 'tests*.rs' ! -path '*/tests/*' -print0 2>/dev/null |
		xargs -0 awk -v re="$regex" '
			FNR == 1 { in_test = 0 }
			/^#\[cfg\(test\)\]/ { in_test = 1 }
			!in_test && $0 !~ /^[[:space:]]*\/\// && $0 ~ re { print FILENAME ":" FNR ": " $0 }'
}

core=(src/pipeline src/ipr src/exit src/link/lifecycle.rs src/link/backoff.rs
	src/transport/sniff.rs src/transport/sniff src/transport/dns_wire.rs)
library=(src/tunnel src/transport src/link)
fail=0
report() {
	local what=$1 hits=$2
	if [[ -n $hits ]]; then
		echo "not ok - $what:"
		sed 's/^/  /' <<<"$hits"
		fail=1
	else
		echo "ok - $what"
	fi
}
report "the sans-IO cores import no tokio" "$(scan 'tokio::|use tokio' "${core[@]}")"
report "the sans-IO cores open no socket" "$(scan 'UdpSocket|TcpStream|TcpListener|UnixStream|UnixDatagram' "${core[@]}")"
report "the sans-IO cores read no clock" "$(scan 'Instant::now\(|SystemTime::now\(' "${core[@]}")"
report "the sans-IO cores import no system, driver, cli or transport code" \
	"$(scan 'crate::(system|driver|cli|transport)' "${core[@]}")"
report "the library imports no system, driver or cli code" "$(scan 'crate::(system|driver|cli)' "${library[@]}")"
exit $fail
