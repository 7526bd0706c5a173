#!/bin/sh
# qemu-i386 benchmark (issue 4): native vs Debian's qemu-i386 vs ours, side by
# side in one run, outputs checked against the native run (triples.py), then
# peak memory of each side. Not a test: run by hand.
#   tests/bench/user/run.sh [--rounds N] [--quick]
# Needs gcc-multilib, qemu-user (Debian's qemu-i386) and apt access for
# busybox-static:i386 (fetch-i386-debs.sh). Work files go to $SCRATCH
# (default /tmp/rqemu-scratch).
set -e
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
rounds=5
quick=
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --quick) quick=1; rounds=3; shift ;;
    *) echo "usage: $0 [--rounds N] [--quick]" >&2; exit 2 ;;
  esac
done
export SCRATCH=${SCRATCH:-/tmp/rqemu-scratch}
W=$SCRATCH/user
B=$W/bin
mkdir -p "$W"
command -v qemu-i386 >/dev/null || { echo "Debian's qemu-i386 is missing: apt-get install --no-install-recommends qemu-user" >&2; exit 1; }
(cd "$root" && cargo build --release -p linux-user >/dev/null)
ours=$root/target/release/qemu-i386
OUT=$B "$here/build.sh" >/dev/null
W=$W "$here/fetch-i386-debs.sh" bb
bb=$W/bb/bin/busybox
[ -f "$W/text32" ] || "$B/gen" text 32 > "$W/text32"
[ -f "$W/lines1m" ] || "$B/gen" lines 1000000 > "$W/lines1m"
[ -f "$W/nums1m" ] || "$B/gen" nums 1000000 > "$W/nums1m"
cp "$here/bb_awk.awk" "$here/bb_sh.sh" "$W/"
rows=$W/rows.txt
if [ -n "$quick" ]; then
  cat > "$rows" <<ROWS
sha256|1|$B/i386/sha256
interp|1|$B/i386/interp 100000 400000
fp_x87|1|$B/i386/fp_x87 1 30000
hello|20|$B/i386/hello
ROWS
else
  cat > "$rows" <<ROWS
sha256|1|$B/i386/sha256
sort|1|$B/i386/sort
interp|1|$B/i386/interp 400000 1500000
fp_x87|1|$B/i386/fp_x87 4 300000
fp_sse2|1|$B/i386/fp_sse2 12 900000
ptrchase|1|$B/i386/ptrchase
syscall|1|$B/i386/syscall 2000000 64
strlib|1|$B/i386/strlib 600000
bb_gzip|1|$bb gzip -c text32
bb_sha256|1|$bb sha256sum text32
bb_sort|1|$bb sort lines1m
bb_awk|1|$bb awk -f bb_awk.awk nums1m
bb_sh|1|$bb sh bb_sh.sh 300000
hello|20|$B/i386/hello
ROWS
fi
echo "== speed (rounds: $rounds) =="
python3 "$here/triples.py" --qemu qemu-i386 --ours "$ours" --rounds "$rounds" --cwd "$W" "$rows" || status=$?
echo
echo "== peak RSS of sha256 (KiB): native, Debian qemu-i386, ours =="
rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }
n=$(rss "$B/i386/sha256"); q=$(rss qemu-i386 "$B/i386/sha256"); o=$(rss "$ours" "$B/i386/sha256")
printf "native %s  qemu %s (+%s)  ours %s (+%s)\n" "$n" "$q" $((q - n)) "$o" $((o - n))
exit ${status:-0}
