#!/bin/sh
# Instructions per GetUser call of one `bench profile` variant, from callgrind: the slope
# between 2000 and 10000 calls (so start-up is left out), median of RUNS runs (a single run
# moves by about +-0.3%).
#
#   cargo build --release -p micro-otel-tests --bin bench
#   tests/bench/instructions.sh off            # or tonic, metrics, 0, 10, 100 (percent
#                                              # sampled, metrics off), metrics+10
#   tests/bench/instructions.sh 0 5 path/to/another/bench
set -eu
variant=${1:?usage: instructions.sh tonic|off|metrics|0|10|100|metrics+10 [RUNS] [BENCH_BINARY]}
runs=${2:-5}
bench=${3:-$(dirname "$0")/../../target/release/bench}
command -v valgrind >/dev/null || { echo "valgrind is not installed (Debian: valgrind)" >&2; exit 1; }
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bench" profile "$variant" "$1" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
i=0
while [ "$i" -lt "$runs" ]; do
    a=$(count 2000)
    b=$(count 10000)
    echo $(((b - a) / 8000))
    i=$((i + 1))
done | sort -n | awk -v v="$variant" '{ r[NR] = $1 } END {
    printf "%s: %d instructions per call (median of %d:", v, r[int((NR + 1) / 2)], NR
    for (i = 1; i <= NR; i++) printf " %d", r[i]
    print ")"
}'
