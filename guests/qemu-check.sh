#!/bin/sh
# Runs the built guests on QEMU (the reference platform, never a dependency) and prints a
# results table.  A run passes when QEMU exits by itself (PSCI SYSTEM_OFF) within the
# timeout, the output has a "SUMMARY: N passed, 0 failed" line with N > 0 and no FAIL line.
#   usage: guests/qemu-check.sh [guest ...]      (default: every build/guests/*.elf)
#   env:   GICS="2 3"  SMPS="1 2 4"  TIMEOUT=60  BUILD=build/guests  LOGS=build/guests/qemu-logs
#          APPEND="..." (bootargs for every guest; default none: each guest runs its default set)
#          INPUT="..." (one line piped to the UART; the uart guest echoes it)
set -u
BUILD=${BUILD:-build/guests}
LOGS=${LOGS:-$BUILD/qemu-logs}
GICS=${GICS:-"2 3"}
SMPS=${SMPS:-"1 2 4"}
TIMEOUT=${TIMEOUT:-60}
APPEND=${APPEND:-}
INPUT=${INPUT:-hello from qemu-check}
QEMU=${QEMU:-qemu-system-aarch64}

command -v "$QEMU" >/dev/null || { echo "$QEMU not found (apt-get install qemu-system-arm)"; exit 2; }
if [ $# -eq 0 ]; then
	set -- $(for f in "$BUILD"/*.elf; do basename "$f" .elf; done)
fi
mkdir -p "$LOGS"
failures=0
printf '%-12s %-5s %-4s %-6s %s\n' guest gic smp result summary
for g in "$@"; do
	for gic in $GICS; do
		for n in $SMPS; do
			log="$LOGS/$g-gic$gic-smp$n.log"
			printf '%s\n' "$INPUT" | timeout "$TIMEOUT" "$QEMU" -M virt,gic-version="$gic" -cpu cortex-a72 \
				-smp "$n" -m 128M -nographic -kernel "$BUILD/$g.elf" ${APPEND:+-append "$APPEND"} \
				>"$log" 2>&1
			rc=$?
			summary=$(grep -a '^SUMMARY:' "$log" | tail -n 1)
			result=PASS
			if [ $rc -ne 0 ] || ! echo "$summary" | grep -Eq '^SUMMARY: [1-9][0-9]* passed, 0 failed' ||
				grep -aq '^FAIL:' "$log"; then
				result=FAIL
				failures=$((failures + 1))
			fi
			[ $rc -eq 124 ] && summary="timeout ${TIMEOUT}s; $summary"
			printf '%-12s %-5s %-4s %-6s %s\n' "$g" "v$gic" "$n" "$result" "${summary:-no SUMMARY (rc=$rc)}"
		done
	done
done
echo "logs: $LOGS; failures: $failures"
[ $failures -eq 0 ]
