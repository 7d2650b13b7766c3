#!/bin/sh
# Bench: lock time for the lab's package closure (real mirror from the host's apt sources),
# then fetch throughput of that closure from a local HTTP server (127.0.0.1) by pibake-inputs
# versus plain curl of the same files (one curl process, sequential and --parallel).
# Usage: inputs/bench/fetch.sh [suite]   (default trixie). Needs: python3, curl, apt.
set -eu
cd "$(dirname "$0")/../.."
SUITE=${1:-trixie}
for t in python3 curl apt-get; do command -v $t >/dev/null || { echo "$t missing: apt-get install ${t%%-*}" >&2; exit 1; }; done

# The lab's packages: the union of the profiles' package lists.
PKGS=$(python3 -c 'import glob,tomllib
s=set()
for f in glob.glob("profiles/*.toml"): s|=set(tomllib.load(open(f,"rb")).get("packages",[]))
print(" ".join(sorted(s)))')
echo "packages: $PKGS"

# Optimized build without LTO, in its own target dir so the workspace's caches are untouched.
[ -n "${SKIP_BUILD:-}" ] || CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_PANIC=unwind \
  cargo build -q --release --target-dir target/bench -p pibake-inputs --example inputs
BIN=target/bench/release/examples/inputs

W=$(mktemp -d)
SERVER=
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT INT TERM

$BIN lock "$W/pibake.lock" "$SUITE" $PKGS
$BIN lock "$W/pibake2.lock" "$SUITE" $PKGS
cmp -s "$W/pibake.lock" "$W/pibake2.lock" && echo "lock: stable (two locks identical)" || echo "lock: DIFFERENT"
echo "from the mirror (network):"
$BIN fetch "$W/pibake.lock" "$W/cache"
$BIN layout "$W/pibake.lock" "$W/cache" "$W/srv" > "$W/files"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server -b 127.0.0.1 -d "$W/srv" "$PORT" >/dev/null 2>&1 &
SERVER=$!
until curl -s -o /dev/null "http://127.0.0.1:$PORT/"; do sleep 0.1; done
BASE="http://127.0.0.1:$PORT"

now() { date +%s.%N; }
# curl config: one url/output pair per file ('+' escaped as apt does).
mkdir -p "$W/curl"
while read -r f; do
  printf 'url = "%s/%s"\noutput = "%s/curl/%s"\n' "$BASE" "$(printf %s "$f" | sed 's/+/%2B/g')" "$W" "$(basename "$f")"
done < "$W/files" > "$W/curl.conf"
BYTES=$(cat "$W/files" | while read -r f; do stat -c %s "$W/srv/$f"; done | awk '{s+=$1} END {print s}')
rate() { python3 -c "import sys; b,t=float(sys.argv[1]),float(sys.argv[2]); print(f'{b/1048576:.1f} MiB in {t:.3f} s ({b/1048576/t:.0f} MiB/s)')" "$1" "$2"; }

for round in 1 2 3; do
  rm -rf "$W/curl"/* "$W/store"
  t0=$(now); curl -sS --fail -K "$W/curl.conf"; t1=$(now)
  rm -rf "$W/curl"/*
  t2=$(now); curl -sS --fail --no-progress-meter --parallel --parallel-max 4 -K "$W/curl.conf"; t3=$(now)
  out=$($BIN fetch "$W/pibake.lock" "$W/store" "$BASE")
  tc=$(python3 -c "print($t1-$t0)"); tp=$(python3 -c "print($t3-$t2)")
  tf=$(echo "$out" | sed -n 's/.* in \([0-9.]*\) s.*/\1/p')
  echo "round $round: curl sequential $(rate "$BYTES" "$tc"); curl --parallel 4 $(rate "$BYTES" "$tp"); pibake fetch (4 jobs, sha256 verified, fsync) $(rate "$BYTES" "$tf")"
  python3 -c "import sys; c,p,f=map(float,sys.argv[1:]); print(f'  ratio fetch/curl-sequential {f/c:.2f}x, fetch/curl-parallel {f/p:.2f}x (goal <= 1.2x)')" "$tc" "$tp" "$tf"
done
