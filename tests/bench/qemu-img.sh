#!/usr/bin/env bash
# Benchmark: rqemu's qemu-img side by side with the real qemu-img (Debian's
# qemu-utils) in the same run. Warm page cache, no fsync on either side
# (-t unsafe / -T unsafe where the command takes it), 1 GiB inputs.
# Prints wall time (best of N) and peak RSS for each row. Not a test.
#
#   tests/bench/qemu-img.sh [--size 1G] [--runs 3] [--work DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
size=1G; runs=3; work=${TMPDIR:-/tmp}/rqemu-bench
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size=$2; shift 2;;
    --runs) runs=$2; shift 2;;
    --work) work=$2; shift 2;;
    *) echo "usage: $0 [--size 1G] [--runs N] [--work DIR]" >&2; exit 2;;
  esac
done
cargo build --release -q -p imgtool
OURS="$PWD/target/release/qemu-img"
REAL=/usr/bin/qemu-img
mkdir -p "$work"
exec python3 - "$OURS" "$REAL" "$work" "$size" "$runs" <<'PY'
import os, random, subprocess, sys, time

ours, real, work, size_s, runs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
mult = {'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30}
size = int(size_s[:-1]) * mult[size_s[-1].upper()] if size_s[-1].isalpha() else int(size_s)
os.chdir(work)

def make_inputs():
    mixed = f"mixed-{size}.raw"
    if not os.path.exists(mixed):
        # Half random, half zero: alternating 4 MiB runs (zero runs are holes).
        with open(mixed + ".tmp", "wb") as f:
            step = 4 << 20
            for off in range(0, size, 2 * step):
                f.seek(off)
                f.write(os.urandom(min(step, size - off)))
            f.truncate(size)
        os.rename(mixed + ".tmp", mixed)
    text = f"text-{size}.raw"
    if not os.path.exists(text):
        rnd = random.Random(42)
        words = [''.join(rnd.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(rnd.randint(2, 10)))
                 for _ in range(5000)]
        with open(text + ".tmp", "wb") as f:
            written = 0
            while written < size:
                block = (' '.join(rnd.choice(words) for _ in range(200000)) + '\n').encode()
                block = block[: size - written]
                f.write(block)
                written += len(block)
        os.rename(text + ".tmp", text)
    return mixed, text

def run(cmd):
    """Runs cmd, returns its wall time in seconds."""
    t = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t
    if p.returncode not in (0, 2, 3):
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr.decode()}")
    return dt

def peak_rss(cmd):
    """Peak RSS in KiB of one run, measured by GNU time."""
    out = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE).stderr.decode().strip().splitlines()
    try:
        return int(out[-1])
    except (ValueError, IndexError):
        return 0

def best(cmd, setup=None):
    times = []
    for _ in range(runs):
        if setup:
            setup()
        times.append(run(cmd))
    if setup:
        setup()
    return min(times), peak_rss(cmd)

def rm(*names):
    def f():
        for n in names:
            try:
                os.remove(n)
            except FileNotFoundError:
                pass
    return f

mixed, text = make_inputs()
# Warm the page cache.
for f in (mixed, text):
    subprocess.run(["cat", f], stdout=subprocess.DEVNULL)

def rows_for(tool, tag):
    q = f"{tag}.qcow2"; r = f"{tag}.raw"
    cz = f"{tag}-c.qcow2"; ct = f"{tag}-ct.qcow2"; d = f"{tag}-d.raw"
    res = {}
    res["convert raw->qcow2"] = best([tool, "convert", "-t", "unsafe", "-f", "raw", "-O", "qcow2", mixed, q], rm(q))
    res["convert qcow2->raw"] = best([tool, "convert", "-t", "unsafe", "-f", "qcow2", "-O", "raw", q, r], rm(r))
    res["convert -c (random)"] = best([tool, "convert", "-t", "unsafe", "-c", "-f", "raw", "-O", "qcow2", mixed, cz], rm(cz))
    res["convert -c (text)"] = best([tool, "convert", "-t", "unsafe", "-c", "-f", "raw", "-O", "qcow2", text, ct], rm(ct))
    res["decompress qcow2->raw"] = best([tool, "convert", "-t", "unsafe", "-f", "qcow2", "-O", "raw", ct, d], rm(d))
    res["info"] = best([tool, "info", q])
    res["check"] = best([tool, "check", q])
    res["create 100G"] = best([tool, "create", "-q", "-f", "qcow2", f"{tag}-100g.qcow2", "100G"], rm(f"{tag}-100g.qcow2"))
    # Outputs must be valid: the real tool checks and compares them.
    for img, src in ((q, mixed), (cz, mixed), (ct, text)):
        c = subprocess.run([real, "check", img], capture_output=True)
        if c.returncode != 0:
            sys.exit(f"{img}: real qemu-img check failed:\n{c.stdout.decode()}{c.stderr.decode()}")
        c = subprocess.run([real, "compare", "-f", "raw", "-F", "qcow2", src, img], capture_output=True)
        if c.returncode != 0:
            sys.exit(f"{img}: differs from {src}: {c.stdout.decode()}")
    for n in (q, r, cz, ct, d):
        rm(n)()
    return res

theirs = rows_for(real, "real")
mine = rows_for(ours, "ours")
print(f"\nqemu-img benchmark, input {size_s} (best of {runs}), {os.cpu_count()} cores")
print(f"{'operation':<24}{'real s':>9}{'ours s':>9}{'ratio':>7}{'real RSS MiB':>14}{'ours RSS MiB':>14}")
for k in theirs:
    (tr, rr), (to, ro) = theirs[k], mine[k]
    ratio = to / tr if tr > 0 else float('nan')
    print(f"{k:<24}{tr:>9.3f}{to:>9.3f}{ratio:>7.2f}{rr/1024:>14.1f}{ro/1024:>14.1f}")
PY
