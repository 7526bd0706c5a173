#!/usr/bin/env bash
# The main job for now: create, write and inspect images with rqemu's
# qemu-img and show that the real qemu-img reads them (and vice versa);
# then run an i386 program under rqemu's qemu-i386.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p imgtool -p linux-user
Q="$PWD/target/release/qemu-img"
I386="$PWD/target/release/qemu-i386"
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
# qemu-i386: an i386 program run natively and under our emulator.
cat > hello32.c <<'C'
#include <stdio.h>
int main(int argc, char **argv) { double x = 1; for (int i = 0; i < 20; i++) x = x * 1.5 + 1;
  printf("hello from i386: argc=%d x=%.3f\n", argc, x); return 7; }
C
if gcc -m32 -static -O2 -o hello32 hello32.c 2>/dev/null; then
  echo; echo "\$ ./hello32 a b            (native)"; ./hello32 a b || echo "exit $?"
  echo "\$ qemu-i386 ./hello32 a b  (ours)"; "$I386" ./hello32 a b || echo "exit $?"
else
  echo "(gcc -m32 not available: qemu-i386 part skipped)"
fi
echo; echo "demo: OK"
