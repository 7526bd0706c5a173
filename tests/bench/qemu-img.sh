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

def ops(tool, tag):
    """The benchmarked operations of one tool: (name, command, cleanup)."""
    q = f"{tag}.qcow2"; r = f"{tag}.raw"
    cz = f"{tag}-c.qcow2"; ct = f"{tag}-ct.qcow2"; d = f"{tag}-d.raw"
    u = ["-t", "unsafe"]
    return [
        ("convert raw->qcow2", [tool, "convert", *u, "-f", "raw", "-O", "qcow2", mixed, q], rm(q)),
        ("convert qcow2->raw", [tool, "convert", *u, "-f", "qcow2", "-O", "raw", q, r], rm(r)),
        ("convert -c (random)", [tool, "convert", *u, "-c", "-f", "raw", "-O", "qcow2", mixed, cz], rm(cz)),
        ("convert -c (text)", [tool, "convert", *u, "-c", "-f", "raw", "-O", "qcow2", text, ct], rm(ct)),
        ("decompress qcow2->raw", [tool, "convert", *u, "-f", "qcow2", "-O", "raw", ct, d], rm(d)),
        ("info", [tool, "info", q], None),
        ("check", [tool, "check", q], None),
        ("create 100G", [tool, "create", "-q", "-f", "qcow2", f"{tag}-100g.qcow2", "100G"], rm(f"{tag}-100g.qcow2")),
    ]

# Each operation is run alternately by the two tools, so background load
# affects both sides alike; an operation's output is kept for the next
# (qcow2->raw reads what raw->qcow2 wrote).
real_ops, our_ops = ops(real, "real"), ops(ours, "ours")
theirs, mine = {}, {}
for (name, rcmd, rclean), (_, ocmd, oclean) in zip(real_ops, our_ops):
    rt, ot = [], []
    for _ in range(runs):
        for cmd, clean, acc in ((rcmd, rclean, rt), (ocmd, oclean, ot)):
            if clean:
                clean()
            acc.append(run(cmd))
    theirs[name] = (min(rt), peak_rss(rcmd) if not rclean else (rclean(), peak_rss(rcmd))[1])
    mine[name] = (min(ot), peak_rss(ocmd) if not oclean else (oclean(), peak_rss(ocmd))[1])

# Outputs must be valid: the real tool checks and compares ours.
for img, src in (("ours.qcow2", mixed), ("ours-c.qcow2", mixed), ("ours-ct.qcow2", text)):
    c = subprocess.run([real, "check", img], capture_output=True)
    if c.returncode != 0:
        sys.exit(f"{img}: real qemu-img check failed:\n{c.stdout.decode()}{c.stderr.decode()}")
    c = subprocess.run([real, "compare", "-f", "raw", "-F", "qcow2", src, img], capture_output=True)
    if c.returncode != 0:
        sys.exit(f"{img}: differs from {src}: {c.stdout.decode()}")
for tag in ("real", "ours"):
    for n in (f"{tag}.qcow2", f"{tag}.raw", f"{tag}-c.qcow2", f"{tag}-ct.qcow2", f"{tag}-d.raw"):
        rm(n)()

print(f"\nqemu-img benchmark, input {size_s} (best of {runs}), {os.cpu_count()} cores")
print(f"{'operation':<24}{'real s':>9}{'ours s':>9}{'ratio':>7}{'real RSS MiB':>14}{'ours RSS MiB':>14}")
for k in theirs:
    (tr, rr), (to, ro) = theirs[k], mine[k]
    ratio = to / tr if tr > 0 else float('nan')
    print(f"{k:<24}{tr:>9.3f}{to:>9.3f}{ratio:>7.2f}{rr/1024:>14.1f}{ro/1024:>14.1f}")
PY
