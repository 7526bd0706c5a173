#!/usr/bin/env bash
# The main job for now: create, write and inspect images with rqemu's
# qemu-img and show that the real qemu-img reads them (and vice versa).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p imgtool
Q="$PWD/target/release/qemu-img"
REAL=/usr/bin/qemu-img
dir=$(mktemp -d /tmp/rqemu-demo.XXXXXX)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { say "$*"; "$@"; }

head -c 8M /dev/urandom > data.bin
truncate -s 32M disk.raw
dd if=data.bin of=disk.raw bs=1M seek=4 conv=notrunc status=none
fmts=$("$Q" --help | sed -n '/^Supported image formats:/,$p' | tail -n +3)
run "$Q" create -f raw new.raw 16M
run "$Q" convert -p -f raw -O raw disk.raw copy.raw
run "$REAL" compare -f raw -F raw disk.raw copy.raw
for fmt in qcow2 qcow; do
  if ! grep -qw "$fmt" <<<"$fmts"; then
    echo "(format $fmt not available in this build yet)"; continue
  fi
  run "$Q" create -f "$fmt" "new.$fmt" 64M
  run "$Q" convert -f raw -O "$fmt" disk.raw "disk.$fmt"
  run "$REAL" check "disk.$fmt" || true
  run "$REAL" compare -f raw -F "$fmt" disk.raw "disk.$fmt"
  run "$REAL" convert -f raw -O "$fmt" disk.raw "real.$fmt"
  run "$Q" compare -f raw -F "$fmt" disk.raw "real.$fmt"
done
if "$Q" info disk.raw >/dev/null 2>&1; then
  run "$Q" info disk.raw
fi
echo; echo "demo: OK"
