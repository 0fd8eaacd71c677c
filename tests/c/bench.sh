#!/usr/bin/env bash
# C ABI vs Rust API cost per event (docs/BENCHMARKS.md, "C ABI"). Runs the C
# bench (tests/c/bench.c, gcc -O2 against libherald.so) and the Rust baseline
# (benches/src/bin/ffi_bench.rs) alternately ROUNDS times and prints medians.
#   tests/c/bench.sh [EVENTS] [ROUNDS]     (defaults: 300000 11)
set -euo pipefail
cd "$(dirname "$0")/../.."
events="${1:-300000}"
rounds="${2:-11}"
cargo build -p herald-ffi -p herald-benches --release --locked --lib --bin ffi_bench >/dev/null
out="$PWD/target/c-tests"
mkdir -p "$out"
gcc -std=c11 -O2 -Wall -Wextra -Werror -Iinclude tests/c/bench.c -Ltarget/release -lherald -o "$out/bench"
results="$(mktemp)"
for ((r = 1; r <= rounds; r++)); do
    for who in c rust; do
        dir="$(mktemp -d)"
        if [[ $who == c ]]; then
            LD_LIBRARY_PATH=target/release "$out/bench" "$dir" "$events" | sed "s/^/c /" >>"$results"
        else
            target/release/ffi_bench "$dir/b" "$events" | sed "s/^/rust /" >>"$results"
        fi
        rm -rf "$dir"
    done
done
python3 - "$results" <<'PY'
import statistics, sys, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    who, name, ns = line.split()
    runs[(who, name)].append(float(ns))
names = ["publish", "claim_commit", "receive_poll", "receive_next", "next_seq_call"]
print("| operation | Rust API ns/event (median / min) | C ABI ns/event (median / min) | overhead ns (median / min) |")
print("|---|---:|---:|---:|")
runs[("rust", "receive_read")] = runs[("rust", "receive_next")]  # same work: copy every field out
names.insert(4, "receive_read")
for n in names:
    r, c = runs[("rust", n)], runs[("c", n)]
    rm, cm = statistics.median(r), statistics.median(c)
    print(f"| {n} | {rm:.1f} / {min(r):.1f} | {cm:.1f} / {min(c):.1f} | {cm - rm:+.1f} / {min(c) - min(r):+.1f} |")
print()
print("In-process, interleaved batches (Rust API vs the C ABI functions called through pointers):")
print()
print("| operation | Rust API ns/event (median) | C ABI ns/event (median) | overhead ns (median of per-round differences) |")
print("|---|---:|---:|---:|")
for n in ["publish", "receive_poll", "receive_next", "next_seq_call"]:
    r, c = runs[("rust", "inproc_rust_" + n)], runs[("rust", "inproc_ffi_" + n)]
    diffs = [b - a for a, b in zip(r, c)]
    print(f"| {n} | {statistics.median(r):.1f} | {statistics.median(c):.1f} | {statistics.median(diffs):+.1f} |")
PY
rm -f "$results"
