#!/usr/bin/env bash
# Build benchmarks (issues 4 and 17), measured side by side in one run on the
# lab's package set. Prints figures; timing goals live here, never in tests.
#   (a) cold build of all lab role images (arm64 and amd64) vs plain mmdebstraps of the same packages
#   (b) warm rebuild after changing one node's address: role images, then per-node images
#       (the root partitions come from the store; only the boot partitions are written)
#   (c) assembling one image around its stored root partition, and from scratch (root
#       partition made again), vs `cp --sparse=always` of the finished image
#   (d) peak RSS of pibake while assembling
# Usage: bench/build.sh [--skip-cold]   (needs root, binfmt, the agent: cargo xtask agent)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
skip_cold=${1:-}
cargo build --quiet --release -p pibake
pibake=$root/target/release/pibake
# Both agents (arm64 for the Pis, amd64 for the pc-efi masters), as pibake reads them.
export PIBAKE_AGENT_BIN=${PIBAKE_AGENT_BIN:-$root/target/agent-cross/aarch64-unknown-linux-gnu/release/pibake-firstboot:$root/target/agent-cross/x86_64-unknown-linux-gnu/release/pibake-firstboot}
for agent in ${PIBAKE_AGENT_BIN//:/ }; do
  [ -x "$agent" ] || { echo "agent $agent missing: run cargo xtask agent"; exit 1; }
done
work=$(mktemp -d /var/tmp/pibake-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lab"
cp examples/lab/cluster.toml examples/lab/pibake.lock "$work/lab/"
# The web stack and its preloaded image (cargo xtask web-image makes the archive).
cp -r examples/lab/stacks examples/lab/oci "$work/lab/"
ln -s "$root/profiles" "$work/profiles"
ln -s "$root/overlays" "$work/overlays"
cfg=$work/lab/cluster.toml
secs() { python3 -c 'import sys,time; print(f"{time.time()-float(sys.argv[1]):.1f}")' "$1"; }

if [ "$skip_cold" != "--skip-cold" ]; then
  store=$work/store-cold
  "$pibake" --store "$store" fetch -c "$cfg" >/dev/null 2>&1
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  # name=version of every locked package: the same set, the kernel's
  # backports versions included (apt would otherwise mix them with trixie's
  # linux-base and refuse).
  pkgs() { python3 -c 'import tomllib,sys; l=tomllib.load(open(sys.argv[1],"rb")); print(",".join(sorted({p["name"]+"="+p["version"] for c in l["closure"] if c["arch"]==sys.argv[2] for p in c["package"]})))' examples/lab/pibake.lock "$1"; }
  plain() {
    # APT::Sandbox::User root, as pibake's own mmdebstrap: run as root,
    # mmdebstrap's apt otherwise found no gpgv to check the Release files.
    mmdebstrap --quiet --aptopt='APT::Sandbox::User "root"' --variant=essential --arch="$1" --include="$(pkgs "$1")" --components=main,non-free-firmware trixie "$work/plain-$1.tar" "deb $mirror trixie main non-free-firmware" "deb $mirror trixie-backports main non-free-firmware" >"$work/plain-$1.log" 2>&1 \
      || { echo "plain mmdebstrap ($1) failed:"; tail -20 "$work/plain-$1.log"; return 1; }
  }
  # Side by side, at once: pibake builds the arm64 rootfs (one mmdebstrap
  # under qemu-user, which keeps one core busy) and then the amd64 one
  # (native); the plain runs do the same two, one after the other. The
  # plain ones download their packages; pibake's come from its store.
  (
    t=$(date +%s.%N)
    "$pibake" --store "$store" --offline build -c "$cfg" --out "$work/out-cold" >/dev/null
    secs "$t" > "$work/cold.s"
  ) & cold_pid=$!
  (
    t=$(date +%s.%N)
    plain arm64
    secs "$t" > "$work/plain-arm64.s"
    t=$(date +%s.%N)
    plain amd64
    secs "$t" > "$work/plain-amd64.s"
  ) & plain_pid=$!
  wait "$cold_pid"
  wait "$plain_pid"
  cold=$(cat "$work/cold.s")
  arm=$(cat "$work/plain-arm64.s")
  amd=$(cat "$work/plain-amd64.s")
  echo "(a) cold build of the two-architecture lab (3 images, 2 rootfs): ${cold}s; plain mmdebstrap of the same packages: arm64 ${arm}s + amd64 ${amd}s = $(python3 -c "print(f'{$arm+$amd:.1f}')")s; ratio $(python3 -c "print(f'{$cold/($arm+$amd):.2f}')")x (goal <= 1.05x)"
  store_warm=$store
else
  store_warm=${PIBAKE_STORE:-$HOME/.cache/pibake}
fi

"$pibake" --store "$store_warm" --offline build -c "$cfg" --out "$work/out" >/dev/null
"$pibake" --store "$store_warm" --offline build -c "$cfg" --out "$work/out-pn" --per-node >/dev/null
sed -i 's/address = "192.168.188.23"/address = "192.168.188.33"/' "$cfg"
t=$(date +%s.%N)
"$pibake" --store "$store_warm" --offline build -c "$cfg" --out "$work/out" >/dev/null
role=$(secs "$t")
t=$(date +%s.%N)
"$pibake" --store "$store_warm" --offline build -c "$cfg" --out "$work/out-pn" --per-node >/dev/null
pernode=$(secs "$t")
echo "(b) warm rebuild after one address change: role images ${role}s (goal <= 3s), per-node images ${pernode}s (goal <= 10s)"

rm -f "$work/out/lab-worker".*
t=$(date +%s.%N)
/usr/bin/time -v "$pibake" --store "$store_warm" --offline build -c "$cfg" --out "$work/out" --role worker >/dev/null 2>"$work/time.txt"
assemble=$(secs "$t")
t=$(date +%s.%N)
cp --sparse=always "$work/out/lab-worker.img" "$work/copy.img"
cp_s=$(secs "$t")
rss=$(awk -F: '/Maximum resident/{gsub(/ /,"",$2); print $2}' "$work/time.txt")
# From scratch: a hard-linked copy of the store without its root partitions' pointers,
# so the root partition is made again (entries are read-only: the copy cannot alter them).
scratch=$work/store-scratch
cp -al "$store_warm" "$scratch"
rm -f "$scratch"/stages/rootpart-*
rm -f "$work/out/lab-worker".*
t=$(date +%s.%N)
/usr/bin/time -v "$pibake" --store "$scratch" --offline build -c "$cfg" --out "$work/out" --role worker >/dev/null 2>"$work/time-scratch.txt"
scratch_s=$(secs "$t")
rss_scratch=$(awk -F: '/Maximum resident/{gsub(/ /,"",$2); print $2}' "$work/time-scratch.txt")
echo "(c) assembling lab-worker around its stored root partition: ${assemble}s; from scratch: ${scratch_s}s; cp --sparse=always of it: ${cp_s}s; ratios $(python3 -c "print(f'{$assemble/max($cp_s,0.001):.1f}x and {$scratch_s/max($cp_s,0.001):.1f}x')") (goal <= 2x from stored parts)"
echo "(d) peak RSS of pibake assembling lab-worker: $((rss / 1024)) MiB around the stored root, $((rss_scratch / 1024)) MiB from scratch (goal <= 512 MiB)"
