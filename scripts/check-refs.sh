#!/bin/bash
# Every section citation in the code, scripts and top-level docs must point at a real heading.
#
#   scripts/check-refs.sh          check the tree this script lives in
#   scripts/check-refs.sh -v       also list every citation checked
#   CHECK_REFS_ROOT=/some/copy scripts/check-refs.sh    check another copy of the tree
#
# A citation is `<file>.md §<n>` (e.g. `docs/ipr-protocol.md §3.4`): the path is relative to
# the repository root, the file must exist, and it must have a markdown heading that starts
# with that number (`## 3.4 MTU`, `### 3.4. MTU`, `## 7. Known bugs`). Further § numbers on the
# same line belong to the nearest file named before them on that line (`… §4.4, §7 #1`), and
# both ends of a range are checked (`§1.3–1.4`). `RFC <n> §<m>` cites an RFC and is not checked.
# A § with no file (or RFC) before it on its line is an error: the reader could not find it.
#
# Scanned: src/ examples/ tests/ localnet/ scripts/ netns-tests/ bench/ fuzz/ Cargo.toml
# README.md ARCHITECTURE.md (build output and this script excluded). Exit 1 lists every failure.
set -e
ROOT=${CHECK_REFS_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$ROOT"
verbose=
[[ ${1:-} == -v ]] && verbose=1

# Byte semantics for awk and grep: § is the UTF-8 pair C2 A7, – (a range dash) E2 80 93.
export LC_ALL=C
SECT=$'\xc2\xa7'
DASH=$'\xe2\x80\x93'

paths=()
for p in src examples tests localnet scripts netns-tests bench fuzz Cargo.toml README.md ARCHITECTURE.md; do
	[[ -e $p ]] && paths+=("$p")
done
echo "== scanning for § citations in: ${paths[*]}"

# One line per citation or problem: "cite<TAB>where<TAB>file<TAB>section" or
# "bare<TAB>where<TAB>text" (a § with no file before it on its line).
found=$(grep -rIn --exclude-dir=target --exclude-dir=.git --exclude=check-refs.sh --exclude=Cargo.lock \
	-e "$SECT" "${paths[@]}" | awk -v S="$SECT" -v D="$DASH" '
{
	# "path:line:text"; the text may itself contain colons.
	i = index($0, ":"); path = substr($0, 1, i - 1); rest = substr($0, i + 1)
	j = index(rest, ":"); where = path ":" substr(rest, 1, j - 1); s = substr(rest, j + 1)
	doc = ""
	tok = "([A-Za-z0-9_.\\/-]*[A-Za-z0-9_-]\\.md|RFC[ ]?[0-9]+|" S "[0-9.]*)"
	while (match(s, tok)) {
		t = substr(s, RSTART, RLENGTH)
		s = substr(s, RSTART + RLENGTH)
		if (t ~ /\.md$/) { doc = t; continue }
		if (t ~ /^RFC/) { doc = "RFC"; continue }
		num = substr(t, length(S) + 1); sub(/\.+$/, "", num)
		if (doc == "" || num == "") { printf "bare\t%s\t%s%s\n", where, t, substr(s, 1, 40); continue }
		if (doc == "RFC") continue
		printf "cite\t%s\t%s\t%s\n", where, doc, num
		# The far end of a range written as §1.3–1.4 or §1.3-1.4.
		if (match(s, "^(" D "|-)[0-9]+([.][0-9]+)*")) {
			end = substr(s, RSTART, RLENGTH); sub("^(" D "|-)", "", end)
			printf "cite\t%s\t%s\t%s\n", where, doc, end
		}
	}
}')

fail=0
ncite=0
declare -A per_doc
while IFS=$'\t' read -r kind where a b; do
	[[ -n $kind ]] || continue
	if [[ $kind == bare ]]; then
		echo "FAIL $where: § without a file name before it on the line: $a"
		fail=1
		continue
	fi
	ncite=$((ncite + 1))
	doc=$a num=$b
	per_doc[$doc]=$((${per_doc[$doc]:-0} + 1))
	if [[ ! -f $doc ]]; then
		echo "FAIL $where: $doc §$num: no such file (paths are relative to the repository root)"
		fail=1
		continue
	fi
	re="^#{1,6}[[:space:]]+${num//./\\.}\\.?([[:space:]]|$)"
	if ! grep -Eq "$re" "$doc"; then
		echo "FAIL $where: $doc §$num: no heading starting with $num"
		fail=1
		continue
	fi
	[[ -z $verbose ]] || echo "ok   $where: $doc §$num"
done <<<"$found"

for doc in $(printf '%s\n' "${!per_doc[@]}" | sort); do
	echo "   $doc: ${per_doc[$doc]} citations"
done
if [[ $fail -ne 0 ]]; then
	echo "check-refs: FAILED (see the FAIL lines above)"
	exit 1
fi
echo "check-refs: ok, $ncite citations resolve to a heading"
