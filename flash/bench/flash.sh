#!/usr/bin/env bash
# Bytes written and time: pibake's flash vs dd, and time vs `bmaptool copy`, for one image.
# Usage: flash/bench/flash.sh [IMAGE.img]   (default: a made-up mostly empty 1.25 GiB image:
# 256 MiB FAT boot + 1 GiB root holding 64 MiB of data, like a fresh lab image)
# Needs: dosfstools, bmap-tools, coreutils. Targets are files in a temp dir (no devices).
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in mkfs.vfat bmaptool sfdisk; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install dosfstools bmap-tools fdisk" >&2; exit 1; }
done

img=${1:-}
if [[ -z $img ]]; then
  img=$work/bench.img
  truncate -s $((1280 * 1024 * 1024 + 4 * 1024 * 1024)) "$img"
  printf 'label: dos\nstart=8192, size=524288, type=c\nstart=532480, type=83\n' | sfdisk -q "$img"
  truncate -s 256M "$work/boot.fat" && mkfs.vfat -F 32 -n BOOTFS "$work/boot.fat" >/dev/null
  dd if="$work/boot.fat" of="$img" bs=1M seek=4 conv=notrunc,sparse status=none
  # 64 MiB of incompressible data spread over the root partition, the rest zero.
  for i in 0 5 10 20 40 60 80 100; do
    head -c 8M /dev/urandom | dd of="$img" bs=1M seek=$((260 + i * 10)) conv=notrunc status=none
  done
  rm -f "$work/boot.fat"
fi
bmap=$img.bmap
[[ -f $bmap ]] || bmaptool create -o "$bmap" "$img" 2>/dev/null
img_bytes=$(stat -c %s "$img")

# Release, but without LTO: fast enough to build on a small machine, same hot loops.
CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
  cargo build -q --release -p pibake-flash --example flash
bin=target/release/examples/flash

secs() { date +%s.%N; }
sync

t0=$(secs); dd if="$img" of="$work/dd.out" bs=4M conv=fsync status=none; t1=$(secs)
dd_bytes=$img_bytes

t2=$(secs); out=$("$bin" "$img" "$work/pibake.out"); t3=$(secs)
pb_bytes=$(sed -n 's/.*bytes_written=\([0-9]*\).*/\1/p' <<<"$out")
pb_written=$(sed -n 's/.*written_seconds=\([0-9.]*\).*/\1/p' <<<"$out")

t4=$(secs); bmaptool -q copy --bmap "$bmap" "$img" "$work/bmaptool.out"; sync; t5=$(secs)

cmp -s "$img" "$work/pibake.out" || { echo "pibake output differs from the image" >&2; exit 1; }
awk -v ib="$img_bytes" -v d="$dd_bytes" -v p="$pb_bytes" \
    -v td="$t0 $t1" -v tp="$t2 $t3" -v tb="$t4 $t5" -v tw="$pb_written" 'BEGIN {
  split(td, a, " "); td = a[2] - a[1]; split(tp, a, " "); tp = a[2] - a[1]; split(tb, a, " "); tb = a[2] - a[1]
  printf "image:          %d bytes\n", ib
  printf "dd:             %d bytes written, %.2f s\n", d, td
  printf "pibake flash:   %d bytes written (%.3fx dd), %.2f s incl. read-back verify\n", p, p / d, tp
  printf "bmaptool copy:  %.2f s (no read-back)\n", tb
  printf "pibake flash up to its read-back: %.2f s = %.2fx bmaptool copy (goal <= 1.2x)\n", tw, tw / tb
  printf "goal <= 0.5x dd bytes: %s\n", (p / d <= 0.5 ? "met" : "NOT met")
}'
