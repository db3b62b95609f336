"""Benchmark the age envelope: our streaming Encryptor against the ``age`` command.

Run ``python bench/envelope.py [--size-mb N] [--runs N]``. It encrypts the same
random file with both, alternating, and prints median throughput and the
ratio; then it measures peak RSS of a child process encrypting 5 MB and the
full size, to show memory does not grow with the payload. It reports and
never fails on a missed target; it exits non-zero only when something breaks.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from firmware.wire import age
from firmware.wire.errors import AgeError

MB = 1_000_000
PIECE = 1024 * 1024
TARGET_RATIO = 0.7
RSS_TOLERANCE_MB = 5.0


def write_random_file(path: Path, size: int) -> None:
    with path.open("wb") as out:
        left = size
        while left > 0:
            piece = os.urandom(min(PIECE, left))
            out.write(piece)
            left -= len(piece)


def encrypt_file(source: Path, target: Path, recipient: str) -> None:
    """Our path: read the plaintext in 1 MiB pieces, stream ciphertext to a file."""
    with (
        source.open("rb") as plain,
        target.open("wb") as sink,
        age.Encryptor(sink, [recipient]) as encryptor,
    ):
        while piece := plain.read(PIECE):
            encryptor.write(piece)


def time_ours(source: Path, target: Path, recipient: str) -> float:
    start = time.perf_counter()
    encrypt_file(source, target, recipient)
    return time.perf_counter() - start


def time_age(source: Path, target: Path, recipient: str) -> float:
    start = time.perf_counter()
    subprocess.run(["age", "-e", "-r", recipient, "-o", str(target), str(source)], check=True)
    return time.perf_counter() - start


# Linux carries a parent's peak RSS into a child across fork and exec, so a
# child started from this (large) process would report at least our size. A
# bare interpreter without site imports starts the command instead; its own
# small size is the floor below which no figure can be told apart.
_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def peak_rss_kib(command: list[str]) -> int:
    """Run ``command`` from a small launcher and return its peak resident set size in KiB."""
    result = subprocess.run(
        [sys.executable, "-S", "-c", _LAUNCHER, *command],
        stdout=subprocess.PIPE,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} exited with status {result.returncode}")
    return int(result.stdout.split()[-1])


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while piece := handle.read(PIECE):
            digest.update(piece)
    return digest.hexdigest()


def child(size_mb: int) -> None:
    """The measured child: encrypt ``size_mb`` MB of fresh random data to a temp file."""
    recipient = age.recipient_of(age.generate_identity())
    with (
        tempfile.TemporaryDirectory() as folder,
        (Path(folder) / "out.age").open("wb") as sink,
        age.Encryptor(sink, [recipient]) as encryptor,
    ):
        left = size_mb * MB
        while left > 0:
            piece = os.urandom(min(PIECE, left))
            encryptor.write(piece)
            left -= len(piece)


def check_interop(folder: Path, source: Path, identity: str, ours: Path) -> str:
    identity_file = folder / "identity.txt"
    identity_file.write_text(identity + "\n")
    plain = folder / "roundtrip.bin"
    subprocess.run(["age", "-d", "-i", str(identity_file), "-o", str(plain), str(ours)], check=True)
    same = sha256_of(plain) == sha256_of(source)
    plain.unlink()
    return "yes" if same else "NO - MISMATCH"


def throughput(size: int, seconds: float) -> float:
    return size / MB / seconds


def run_benchmark(size_mb: int, runs: int) -> None:
    have_age = shutil.which("age") is not None
    identity = age.generate_identity()
    recipient = age.recipient_of(identity)
    size = size_mb * MB
    print(f"payload: {size_mb} MB random; {runs} runs each, alternating; median time")
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        source, ours_out, age_out = folder / "in.bin", folder / "ours.age", folder / "age.age"
        write_random_file(source, size)
        ours_times: list[float] = []
        age_times: list[float] = []
        for _ in range(runs):
            ours_times.append(time_ours(source, ours_out, recipient))
            if have_age:
                age_times.append(time_age(source, age_out, recipient))
        ours_median = statistics.median(ours_times)
        print(
            f"ours (linerec Encryptor): {throughput(size, ours_median):8.1f} MB/s  "
            f"median {ours_median * 1000:7.1f} ms  runs " + ", ".join(f"{t * 1000:.1f}" for t in ours_times)
        )
        if have_age:
            age_median = statistics.median(age_times)
            ratio = age_median / ours_median
            verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
            print(
                f"age CLI (age -e -r):      {throughput(size, age_median):8.1f} MB/s  "
                f"median {age_median * 1000:7.1f} ms  runs " + ", ".join(f"{t * 1000:.1f}" for t in age_times)
            )
            print(f"ratio ours/age: {ratio:.2f}  ({verdict} the {TARGET_RATIO}x target)")
            print(f"age -d reads our output back intact: {check_interop(folder, source, identity, ours_out)}")
        else:
            print("age CLI not found on PATH: no peer timing, ratio or interop check")
        report_rss(size_mb, source, folder / "rss.age", recipient, have_age=have_age)


def report_rss(size_mb: int, source: Path, target: Path, recipient: str, *, have_age: bool) -> None:
    small_mb = min(5, size_mb)
    me = [sys.executable, str(Path(__file__).resolve()), "--child"]
    floor = peak_rss_kib(["true"]) / 1024
    small = peak_rss_kib([*me, str(small_mb)]) / 1024
    large = peak_rss_kib([*me, str(size_mb)]) / 1024
    print(f"peak RSS measurement floor (`true`): {floor:6.1f} MiB")
    print(f"peak RSS ours, {small_mb:3d} MB payload: {small:6.1f} MiB")
    print(f"peak RSS ours, {size_mb:3d} MB payload: {large:6.1f} MiB")
    grows = large - small
    independent = abs(grows) <= RSS_TOLERANCE_MB
    print(
        f"RSS independent of payload size (within {RSS_TOLERANCE_MB:.0f} MiB): "
        f"{'yes' if independent else 'NO'} (difference {grows:+.1f} MiB)"
    )
    if have_age:
        peer = peak_rss_kib(["age", "-e", "-r", recipient, "-o", str(target), str(source)]) / 1024
        note = " (at the floor: the true figure may be lower)" if peer <= floor + 0.5 else ""
        print(f"peak RSS age CLI, {size_mb:3d} MB payload: {peer:6.1f} MiB{note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mb", type=int, default=50, help="payload size in MB (10^6 bytes)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each encryptor")
    parser.add_argument("--child", type=int, metavar="SIZE_MB", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(args.child)
        return 0
    if args.size_mb < 1 or args.runs < 1:
        parser.error("--size-mb and --runs must be at least 1")
    try:
        run_benchmark(args.size_mb, args.runs)
    except (OSError, subprocess.CalledProcessError, RuntimeError, AgeError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
