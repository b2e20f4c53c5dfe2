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
	if ./"$suite".sh | tee "/tmp/smx-suite-$suite.log"; then :; else suites_failed+=("$suite"); fi
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
