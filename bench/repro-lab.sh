#!/usr/bin/env bash
# Reproducibility of the full lab: builds every role image twice, from two
# empty stores with the same lock, and compares the images' sha256.
# Usage: bench/repro-lab.sh   (needs root, binfmt, the agent: cargo xtask agent)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release -p pibake
pibake=$PWD/target/release/pibake
agent=${PIBAKE_AGENT_BIN:-$PWD/target/agent-cross/aarch64-unknown-linux-gnu/release/pibake-firstboot}
work=$(mktemp -d /var/tmp/pibake-repro.XXXXXX)
trap 'rm -rf "$work"' EXIT
for run in 1 2; do
  start=$(date +%s)
  "$pibake" --store "$work/store$run" fetch -c examples/lab/cluster.toml >/dev/null 2>&1
  "$pibake" --store "$work/store$run" --offline build -c examples/lab/cluster.toml --agent "$agent" --out "$work/out$run" >/dev/null
  echo "run $run: $(( $(date +%s) - start ))s"
  (cd "$work/out$run" && sha256sum ./*.img) > "$work/sums$run"
done
cat "$work/sums1"
if cmp -s "$work/sums1" "$work/sums2"; then
  echo "reproducible: all $(wc -l < "$work/sums1") images identical"
else
  diff "$work/sums1" "$work/sums2"; echo "NOT reproducible"; exit 1
fi
