#!/usr/bin/env bash
# fuzz.sh GO FUZZTIME MINIMIZETIME PKG:TARGET... runs each fuzz target for FUZZTIME from its seed
# corpus and stops at the first failure. A run that fails without writing a failing input (the
# fuzzing engine's own error, e.g. its coordinator's "context deadline exceeded" on a loaded
# machine) is said so and run once more; a failing input always fails the run.
set -uo pipefail
go=$1 fuzztime=$2 minimize=$3
shift 3
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for t in "$@"; do
  pkg=${t%%:*} name=${t#*:}
  for try in 1 2; do
    echo "$go test -run '^\$' -fuzz '^$name\$' -fuzztime $fuzztime -fuzzminimizetime $minimize $pkg"
    if "$go" test -run '^$' -fuzz "^$name\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimize" "$pkg" 2>&1 | tee "$out"; then
      break
    fi
    if grep -q 'Failing input written to' "$out" || [ "$try" = 2 ]; then
      exit 1
    fi
    echo "fuzz: $name failed without a failing input (an error of the fuzzing engine, not of the code); running it once more"
  done
done
