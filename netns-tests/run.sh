#!/bin/bash
# Entry point of the privileged end-to-end suites. Each suite creates its own uniquely named
# namespaces and removes them on exit; this script checks that nothing was left behind.
set -e
cd "$(dirname "$0")"
export SMX_BIN=${SMX_BIN:-$(cd .. && pwd)/target/release}
passed=0 failed=0 suites_failed=()
before=$(ip netns list | grep -c '^smx-' || true)
for suite in ${SUITES:-datapath split perapp dns resolved service offline library reliability lockdown systemd mixnet}; do
	echo "== netns suite: $suite"
	t0=$(date +%s)
	./"$suite".sh | tee "/tmp/smx-suite-$suite.log"
	# The suite's own status (not tee's), and its summary line: a suite that stops half-way
	# (set -e in a helper) has neither, whatever its checks said so far.
	rc=${PIPESTATUS[0]}
	if ! grep -Eq "^$suite: [0-9]+ passed, [0-9]+ failed" "/tmp/smx-suite-$suite.log"; then
		echo "not ok - suite $suite stopped (status $rc) before its summary line"
		suites_failed+=("$suite")
	elif ((rc != 0)); then
		suites_failed+=("$suite")
	fi
	# CI has 90 minutes for everything: each suite's share, to keep an eye on.
	echo "== netns suite: $suite took $(( $(date +%s) - t0 )) s"
	p=$(grep -c '^ok ' "/tmp/smx-suite-$suite.log" || true)
	f=$(grep -c '^not ok ' "/tmp/smx-suite-$suite.log" || true)
	passed=$((passed + p)) failed=$((failed + f))
done
after=$(ip netns list | grep -c '^smx-' || true)
if [[ $after -ne $before ]] || pgrep -f 'target/release/smolmix-(vpn|exit)' >/dev/null; then
	echo "not ok - a suite left namespaces or processes behind"; failed=$((failed + 1))
	ip netns list | grep '^smx-' || true
else
	echo "ok - no namespace, TUN or process of the suites is left behind"; passed=$((passed + 1))
fi
echo "netns: $passed passed, $failed failed"
[[ $failed -eq 0 && ${#suites_failed[@]} -eq 0 ]]
