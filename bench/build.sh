#!/usr/bin/env bash
# Build benchmarks of issue 4, measured side by side in one run on the lab's
# package set. Prints figures; timing goals live here, never in tests.
#   (a) cold build of all lab role images vs one plain mmdebstrap of the same packages
#   (b) warm rebuild after changing one node's address: role images, then per-node images
#   (c) assembling one image vs `cp --sparse=always` of the finished image
#   (d) peak RSS of pibake while assembling
# Usage: bench/build.sh [--skip-cold]   (needs root, binfmt, the agent: cargo xtask agent)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
skip_cold=${1:-}
cargo build --quiet --release -p pibake
pibake=$root/target/release/pibake
agent=${PIBAKE_AGENT_BIN:-$root/target/agent-cross/aarch64-unknown-linux-gnu/release/pibake-firstboot}
[ -x "$agent" ] || { echo "agent missing: run cargo xtask agent"; exit 1; }
work=$(mktemp -d /var/tmp/pibake-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lab"
cp examples/lab/cluster.toml examples/lab/pibake.lock "$work/lab/"
ln -s "$root/profiles" "$work/profiles"
ln -s "$root/overlays" "$work/overlays"
cfg=$work/lab/cluster.toml
secs() { python3 -c 'import sys,time; print(f"{time.time()-float(sys.argv[1]):.1f}")' "$1"; }

if [ "$skip_cold" != "--skip-cold" ]; then
  store=$work/store-cold
  "$pibake" --store "$store" fetch -c "$cfg" >/dev/null 2>&1
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  pkgs=$(python3 -c 'import tomllib,sys; l=tomllib.load(open(sys.argv[1],"rb")); print(",".join(sorted({p["name"] for p in l["package"]})))' examples/lab/pibake.lock)
  # Side by side, at once: both are one mmdebstrap under qemu-user, which
  # keeps one core busy, so on two cores neither slows the other much.
  # The plain one downloads its packages; pibake's come from its store.
  (
    t=$(date +%s.%N)
    "$pibake" --store "$store" --offline build -c "$cfg" --agent "$agent" --out "$work/out-cold" >/dev/null
    secs "$t" > "$work/cold.s"
  ) & cold_pid=$!
  (
    t=$(date +%s.%N)
    mmdebstrap --quiet --variant=essential --arch=arm64 --include="$pkgs" --components=main,non-free-firmware trixie "$work/plain.tar" "deb $mirror trixie main non-free-firmware" >/dev/null 2>&1
    secs "$t" > "$work/plain.s"
  ) & plain_pid=$!
  wait "$cold_pid"
  wait "$plain_pid"
  cold=$(cat "$work/cold.s")
  plain=$(cat "$work/plain.s")
  echo "(a) cold build of all role images: ${cold}s; plain mmdebstrap of the same packages: ${plain}s; ratio $(python3 -c "print(f'{$cold/$plain:.2f}')")x (goal <= 1.1x)"
  store_warm=$store
else
  store_warm=${PIBAKE_STORE:-$HOME/.cache/pibake}
fi

"$pibake" --store "$store_warm" --offline build -c "$cfg" --agent "$agent" --out "$work/out" >/dev/null
"$pibake" --store "$store_warm" --offline build -c "$cfg" --agent "$agent" --out "$work/out-pn" --per-node >/dev/null
sed -i 's/address = "192.168.188.23"/address = "192.168.188.33"/' "$cfg"
t=$(date +%s.%N)
"$pibake" --store "$store_warm" --offline build -c "$cfg" --agent "$agent" --out "$work/out" >/dev/null
role=$(secs "$t")
t=$(date +%s.%N)
"$pibake" --store "$store_warm" --offline build -c "$cfg" --agent "$agent" --out "$work/out-pn" --per-node >/dev/null
pernode=$(secs "$t")
echo "(b) warm rebuild after one address change: role images ${role}s (goal <= 15s), per-node images ${pernode}s (goal <= 45s)"

rm -f "$work/out/lab-worker".*
t=$(date +%s.%N)
/usr/bin/time -v "$pibake" --store "$store_warm" --offline build -c "$cfg" --agent "$agent" --out "$work/out" --role worker >/dev/null 2>"$work/time.txt"
assemble=$(secs "$t")
t=$(date +%s.%N)
cp --sparse=always "$work/out/lab-worker.img" "$work/copy.img"
cp_s=$(secs "$t")
rss=$(awk -F: '/Maximum resident/{gsub(/ /,"",$2); print $2}' "$work/time.txt")
echo "(c) assembling lab-worker: ${assemble}s; cp --sparse=always of it: ${cp_s}s; ratio $(python3 -c "print(f'{$assemble/max($cp_s,0.001):.1f}')")x (goal <= 2x)"
echo "(d) peak RSS of pibake assembling lab-worker: $((rss / 1024)) MiB (goal <= 512 MiB)"
