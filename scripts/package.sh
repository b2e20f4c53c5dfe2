#!/bin/bash
# The .deb, built from the release binaries already built and inspected as a new user meets it:
#
#   release binaries ─▶ smolmix-vpn man --dir / completions ─▶ target/release/dist/
#                    ─▶ cargo deb --no-build ─▶ smolmix-vpn_*.deb
#                    ─▶ dpkg-deb -c / -I          (the files, the dependencies)
#                    ─▶ dpkg --root=$root -i      (a scratch root, not this host)
#                    ─▶ in $root: --version, man -l, bash completion, systemd-analyze verify
#
# Builds nothing: run it after `cargo build --release` (scripts/test.sh does). The target dir is
# $CARGO_TARGET_DIR, else ./target, as for cargo. Each check is printed "ok N - ..." or
# "not ok N - ..."; any failure exits 1. Needs dpkg, man-db, bash-completion and systemd's
# systemd-analyze (scripts/deps.sh); installs cargo-deb (pinned) if missing.
#
#   scripts/package.sh
set -e
cd "$(dirname "$0")/.."
CARGO_DEB_VERSION=3.8.0
target=${CARGO_TARGET_DIR:-$PWD/target}
release=$target/release
dist=$release/dist
for bin in smolmix-vpn smolmix-exit; do
	if [[ ! -x $release/$bin ]]; then
		echo "$release/$bin is missing: build it first (cargo build --release --bins)" >&2
		exit 1
	fi
done

root=$(mktemp -d /tmp/smx-package-$$.XXXXXX)
cleanup() { rm -rf "$root"; }
trap cleanup EXIT

n=0
failed=0
check() {
	local what=$1
	shift
	n=$((n + 1))
	if "$@" >/dev/null 2>&1; then
		echo "ok $n - $what"
	else
		echo "not ok $n - $what"
		failed=1
	fi
}
not() { ! "$@"; }

# What the binary generates, into the dirs the [package.metadata.deb] assets name.
rm -rf "$dist"
mkdir -p "$dist/completions"
"$release/smolmix-vpn" man --dir "$dist/man" >/dev/null
gzip -9n "$dist"/man/*.1
"$release/smolmix-vpn" completions bash >"$dist/completions/smolmix-vpn"
"$release/smolmix-vpn" completions zsh >"$dist/completions/_smolmix-vpn"
"$release/smolmix-vpn" completions fish >"$dist/completions/smolmix-vpn.fish"
if [[ -f examples/profiles/example.toml ]]; then
	cp examples/profiles/example.toml "$dist/example-profile.toml"
else
	# Until the profile work lands: a placeholder, said aloud so it is not shipped unnoticed.
	echo "note: examples/profiles/example.toml is missing; the package gets a placeholder"
	printf '# A smolmix-vpn profile: see smolmix-vpn-up(1). (placeholder)\n' >"$dist/example-profile.toml"
fi

if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
	echo "installing cargo-deb $CARGO_DEB_VERSION"
	cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi
rm -f "$target"/debian/smolmix-vpn_*.deb
# --strip: the release profile keeps line tables for backtraces (Cargo.toml), 250 MB a binary;
# a user's package gets the 30 MB stripped ones.
cargo deb --no-build --strip --output "$target/debian/"
deb=$(ls "$target"/debian/smolmix-vpn_*.deb)
echo "== $deb"

# The files, each expected path checked by name.
contents=$(dpkg-deb -c "$deb")
for path in usr/bin/smolmix-vpn usr/bin/smolmix-exit lib/systemd/system/smolmix-vpn@.service \
	lib/systemd/system/smolmix-vpn-lockdown@.service \
	usr/share/man/man1/smolmix-vpn.1.gz usr/share/man/man1/smolmix-vpn-up.1.gz \
	usr/share/man/man1/smolmix-vpn-block.1.gz \
	usr/share/bash-completion/completions/smolmix-vpn usr/share/zsh/vendor-completions/_smolmix-vpn \
	usr/share/fish/vendor_completions.d/smolmix-vpn.fish usr/share/doc/smolmix-vpn/example-profile.toml; do
	check "dpkg-deb -c lists /$path" grep -qE " \./$path\$" <<<"$contents"
done
info=$(dpkg-deb -I "$deb")
sed -n 's/^ *\(Package\|Version\|Architecture\|Depends\|Installed-Size\):/  &/p' <<<"$info"
check "depends on iproute2" grep -qE '^ *Depends:.*\biproute2\b' <<<"$info"
check "depends on nftables" grep -qE '^ *Depends:.*\bnftables\b' <<<"$info"
# Unstripped, the two binaries alone install 436 MB (line tables, Cargo.toml's release profile).
kib=$(sed -n 's/^ *Installed-Size: *//p' <<<"$info")
check "the binaries are stripped: Installed-Size ${kib} KiB is under 100 MiB" test "${kib:-999999}" -lt 102400

# A real dpkg install into the scratch root: an empty database, dependencies not looked for
# (the root has no other packages), no maintainer scripts to run as root in it.
mkdir -p "$root"/var/lib/dpkg/{info,updates,triggers} "$root"/var/log
: >"$root/var/lib/dpkg/status"
: >"$root/var/lib/dpkg/available"
check "dpkg --root installs it" dpkg --root="$root" --log=/dev/null --force-depends --force-not-root \
	--force-script-chrootless -i "$deb"
check "dpkg knows it as installed" grep -q '^Status: install ok installed' "$root/var/lib/dpkg/status"

check "the installed smolmix-vpn runs (--version)" grep -q '^smolmix-vpn ' <("$root/usr/bin/smolmix-vpn" --version)
check "the installed smolmix-exit runs (--help)" "$root/usr/bin/smolmix-exit" --help

# The man page renders, and names every subcommand (from the binary's own list).
page=$(MANWIDTH=100 man -l "$root/usr/share/man/man1/smolmix-vpn.1.gz" 2>/dev/null | col -b)
check "man -l renders smolmix-vpn(1)" grep -q 'SMOLMIX-VPN(1)' <<<"$page"
subcommands=$(sed -n 's/^ *opts="[^"]*--version \(.*\)"$/\1/p' "$root/usr/share/bash-completion/completions/smolmix-vpn" | head -1)
check "the bash completion lists subcommands ($subcommands)" test -n "$subcommands"
for sub in $subcommands; do
	check "smolmix-vpn(1) names smolmix-vpn-$sub(1)" grep -q "smolmix-vpn-$sub(1)" <<<"$page"
	check "smolmix-vpn-$sub(1) renders" grep -qi "smolmix-vpn-$sub" \
		<(man -l "$root/usr/share/man/man1/smolmix-vpn-$sub.1.gz" 2>/dev/null)
done
for section in FILES EXAMPLES; do
	check "smolmix-vpn(1) has $section" grep -q "^$section" <<<"$page"
done

# Bash completion as bash runs it: the installed file sourced after bash-completion's
# helpers, its function called with COMP_WORDS/COMP_CWORD as for a TAB after the last word.
complete_words() {
	bash --norc --noprofile -c '
		source /usr/share/bash-completion/bash_completion
		source "$1"; shift
		COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
		fn=$(complete -p smolmix-vpn | sed -n "s/.*-F \([^ ]*\) .*/\1/p")
		"$fn" smolmix-vpn "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
		printf "%s\n" "${COMPREPLY[@]}"' _ "$root/usr/share/bash-completion/completions/smolmix-vpn" "$@"
}
ip_words=$(complete_words smolmix-vpn up --ip | sort | tr '\n' ' ')
echo "  smolmix-vpn up --ip<TAB>: $ip_words"
check "bash completes 'smolmix-vpn up --ip' to --ipr (and --ipv6 only)" test "$ip_words" = "--ipr --ipv6 "
sub_words=$(complete_words smolmix-vpn '' | grep -v '^-' | sort | tr '\n' ' ')
echo "  smolmix-vpn <TAB>: $sub_words"
check "bash completes 'smolmix-vpn ' to the subcommands" \
	test "$sub_words" = "$(tr ' ' '\n' <<<"$subcommands" | sort | tr '\n' ' ')"
# Control: a word no option starts with completes to nothing, so the checks above can fail.
check "control: 'smolmix-vpn up --zz' completes to nothing" test -z "$(complete_words smolmix-vpn up --zz)"

# The installed unit. systemd-analyze verify looks for every unit it refers to and for the
# binaries under --root, so the root gets this host's unit files. It exits 0 on values it
# ignores ("Failed to parse ..., ignoring"), so any output at all is a failure too.
verify_unit() {
	local out
	SYSTEMD_LOG_COLOR=0 systemd-analyze verify --man=no --root="$root" "${1:-smolmix-vpn@test.service}" \
		>"$root/verify.log" 2>&1 && [[ ! -s $root/verify.log ]]
}
mkdir -p "$root/etc/systemd/system"
cp -an /lib/systemd/system/. "$root/lib/systemd/system/"
check "systemd-analyze verify passes on the installed unit" verify_unit
sed 's/^/  # /' "$root/verify.log"
check "systemd-analyze verify passes on the installed lockdown unit" verify_unit smolmix-vpn-lockdown@test.service
sed 's/^/  # /' "$root/verify.log"
unit=$root/lib/systemd/system/smolmix-vpn@.service
cp "$unit" "$root/unit.good"
sed -i 's/^Type=notify$/Type=notfy/' "$unit"
check "control: verify fails on a unit with a bad Type=" not verify_unit
sed 's/^/  # /' "$root/verify.log"
cp "$root/unit.good" "$unit"
echo "== systemd-analyze security --offline (exposure, lower is better; not asserted)"
systemd-analyze security --offline=true --root="$root" smolmix-vpn@test.service 2>/dev/null | tail -1 || true

echo "== $n checks"
exit $failed
