#!/usr/bin/env bash
# Reproducibility of the full lab: builds every role image twice, from two
# empty stores with the same lock, and compares the sha256 of every raw image
# and of the pc-efi masters' .qcow2 (qemu-img convert, reproducible too).
# Usage: bench/repro-lab.sh   (needs root, binfmt, the agent: cargo xtask agent)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release -p pibake
pibake=$PWD/target/release/pibake
# Both agents (arm64 for the Pis, amd64 for the pc-efi masters), as pibake reads them.
export PIBAKE_AGENT_BIN=${PIBAKE_AGENT_BIN:-$PWD/target/agent-cross/aarch64-unknown-linux-gnu/release/pibake-firstboot:$PWD/target/agent-cross/x86_64-unknown-linux-gnu/release/pibake-firstboot}
work=$(mktemp -d /var/tmp/pibake-repro.XXXXXX)
trap 'rm -rf "$work"' EXIT
# The two runs go at once: each rootfs stage is one mmdebstrap under
# qemu-user, single-threaded, so two cores run both in about the time of one.
one_run() {
  local run=$1 start
  start=$(date +%s)
  "$pibake" --store "$work/store$run" fetch -c examples/lab/cluster.toml >/dev/null 2>&1
  "$pibake" --store "$work/store$run" --offline build -c examples/lab/cluster.toml --out "$work/out$run" >/dev/null
  echo "run $run (cold, beside the other run): $(( $(date +%s) - start ))s"
  (cd "$work/out$run" && sha256sum ./*.img ./*.qcow2) > "$work/sums$run"
}
one_run 1 & first=$!
one_run 2 & second=$!
wait "$first"
wait "$second"
cat "$work/sums1"
if cmp -s "$work/sums1" "$work/sums2"; then
  echo "reproducible: all $(wc -l < "$work/sums1") outputs (.img and .qcow2) identical"
else
  diff "$work/sums1" "$work/sums2"; echo "NOT reproducible"; exit 1
fi
