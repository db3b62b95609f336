"""Benchmark the archive at scale: search over a million indexed calls, and ingest through the broker.

Run ``python bench/archive.py [--rows 1000000] [--queries 200] [--ingest 500] [--ingest-kb 20] [--runs 3]``.

* The index: ``--rows`` synthetic calls (40 devices, three years, 200,000
  caller numbers in 300 area codes, a tenth withheld, names on half, tags on
  one in a hundred) bulk-inserted through the archive's own schema and
  statements, built once per run (``--cache DIR`` keeps it between runs).
* Search by caller prefix and date range (target < 50 ms median): the agent's
  own ``index.search`` through ``Archive``, a 6-digit prefix (area code and
  exchange) and a 90-day window, every matching row read and turned into a
  ``CallRow``. The peer in the same run is the ``sqlite3`` shell running the
  same statement (its ``.timer`` figure), and a baseline is the same filter
  without the caller index (a full scan).
* Newest 50 (target < 20 ms median): ``index.search`` with a limit of 50, and
  the ``sqlite3`` shell on the same statement.
* Ingest (target >= 100 recordings/s): ``--ingest`` recordings of
  ``--ingest-kb`` kB each, signed and sealed as a device does, drained from a
  spool by a real ``Uplink`` (a child process) through a private mosquitto to
  a real ``Ingest`` storing into a copy of the million-call archive, timed
  until the last ``stored`` ack. The peer is ``mosquitto_pub -q 1 -f`` of the
  same files (as in ``bench/transfer.py``, whose helpers this reuses).

It reports and never fails on a missed target; it exits non-zero only when
something breaks.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from agent import index  # noqa: E402
from agent.archive import Archive  # noqa: E402
from agent.ingest import Ingest  # noqa: E402
from agent.schema import CALL_COLUMNS, INSERT_CALL, SCHEMA_VERSION, digits, utc_text  # noqa: E402
from bench.transfer import (  # noqa: E402
    DEVICE,
    ByteCounter,
    Keys,
    fill_spool,
    make_recordings,
    run_uplink_child,
    time_peer,
)
from firmware.wire import age  # noqa: E402
from firmware.wire.errors import LinerecError  # noqa: E402
from firmware.wire.signing import public_key_text  # noqa: E402
from tests.support.broker import Mosquitto  # noqa: E402

SEARCH_TARGET_MS = 50.0
NEWEST_TARGET_MS = 20.0
INGEST_TARGET = 100.0  # recordings per second
DEVICES = 40
NUMBERS = 200_000
AREA_CODES = 300
START = datetime(2023, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=3 * 365)
WINDOW = timedelta(days=90)
BATCH = 50_000


# --- the index -------------------------------------------------------------------------------


def _numbers(rng: random.Random) -> list[str]:
    areas = [f"{rng.randint(201, 989)}" for _ in range(AREA_CODES)]
    return [f"{rng.choice(areas)}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}" for _ in range(NUMBERS)]


def _rows(
    first: int, count: int, *, total: int, numbers: list[str], devices: list[str], rng: random.Random
) -> list[tuple[object, ...]]:
    """Rows ``first`` to ``first + count`` of ``total`` calls spread evenly over the span, oldest first."""
    columns = [c.strip() for c in CALL_COLUMNS.split(",")]
    step = SPAN / total
    out = []
    for i in range(first, first + count):
        started = START + step * i
        rec_id = f"{started:%Y%m%dT%H%M%S}{started.microsecond // 1000:03d}Z-{i:08x}"
        device = devices[i % len(devices)]
        number = None if rng.random() < 0.1 else rng.choice(numbers)
        answered = rng.random() < 0.85
        duration = round(rng.uniform(5, 600), 1) if answered else 0.0
        iso = started.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        day = f"{device}/{started:%Y/%m/%d}/{rec_id}"
        values = {
            "id": rec_id,
            "device": device,
            "line": "line1",
            "started_at": iso,
            "answered_at": iso if answered else None,
            "ended_at": iso,
            "duration_s": duration,
            "caller_number": number,
            "caller_name": f"CALLER {number[-4:]}" if number and rng.random() < 0.5 else None,
            "caller_absent": None if number else "P",
            "answered": int(answered),
            "hangup_cause": "remote" if answered else "unanswered",
            "ring_count": rng.randint(1, 6),
            "path": f"{day}.flac.age",
            "manifest_path": f"{day}.manifest.age",
            "size": int(duration * 8000),
            "sha256": f"{rng.getrandbits(256):064x}",
            "stored_at": iso,
            "original_path": None,
            "consent_rule": "one-party" if answered else None,
            "consent_jurisdiction": "US-NY" if answered else None,
            "consent_recorded": int(answered) if answered else None,
            "consent_notice": 0 if answered else None,
            "consent_express": None,
        }
        out.append((*(values[c] for c in columns), utc_text(started), digits(number)))
    return out


def build_index(root: Path, rows: int) -> Path:
    """An archive folder whose index holds ``rows`` synthetic calls, made through the archive's schema."""
    rng = random.Random(20240305)
    devices = [f"bench-{n:02d}" for n in range(DEVICES)]
    with Archive(root) as archive:
        for device in devices:
            archive.enrol(device, public_key_text(Ed25519PrivateKey.generate()))
    numbers = _numbers(rng)
    db = sqlite3.connect(root / "index.sqlite", isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")  # a bench build: the data can be made again
    db.execute("BEGIN")
    for first in range(0, rows, BATCH):
        batch = _rows(first, min(BATCH, rows - first), total=rows, numbers=numbers, devices=devices, rng=rng)
        db.executemany(INSERT_CALL, batch)
    tagged = [(row[0], "complaint") for row in db.execute("SELECT id FROM calls WHERE rowid % 100 = 0")]
    db.executemany("INSERT INTO call_tags (call_id, tag) VALUES (?, ?)", tagged)
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return root


def cached_index(work: Path, rows: int, cache: Path | None) -> Path:
    """The built archive folder: from ``cache`` when it holds one of this size and schema, else built now."""
    name = f"archive-{rows}-v{SCHEMA_VERSION}"
    if cache is not None and (cache / name / "index.sqlite").is_file():
        print(f"index: {rows} calls from the cache {cache / name}")
        return cache / name
    target = (cache or work) / name
    shutil.rmtree(target, ignore_errors=True)
    start = time.perf_counter()
    build_index(target, rows)
    size = (target / "index.sqlite").stat().st_size / 1e6
    print(f"index: {rows} calls built in {time.perf_counter() - start:.1f} s ({size:.0f} MB) at {target}")
    return target


# --- search ----------------------------------------------------------------------------------


def _queries(archive: Archive, count: int, rng: random.Random, digits_: int) -> list[index.Query]:
    """Queries for numbers starting with ``digits_`` digits of a real caller's number, over a 90-day window."""
    prefixes = [
        str(row[0])[:digits_]
        for row in archive.read("SELECT caller_digits FROM calls WHERE caller_digits IS NOT NULL AND rowid % 97 = 0")
    ]
    out = []
    for _ in range(count):
        since = START + timedelta(seconds=rng.uniform(0, (SPAN - WINDOW).total_seconds()))
        out.append(index.Query(caller=rng.choice(prefixes), since=since, until=since + WINDOW))
    return out


def _time(archive: Archive, query: index.Query) -> tuple[float, int]:
    start = time.perf_counter()
    found = sum(1 for _ in index.search(archive, query))
    return (time.perf_counter() - start) * 1000, found


def _literal(sql: str, params: tuple[object, ...]) -> str:
    """The statement with its parameters written in, for the sqlite3 shell (they are digits, dates, numbers)."""
    parts = sql.split("?")
    assert len(parts) == len(params) + 1
    out = parts[0]
    for value, rest in zip(params, parts[1:], strict=True):
        out += (f"'{value}'" if isinstance(value, str) else str(value)) + rest
    return out


def shell_ms(db_path: Path, statements: list[str], rounds: int = 3) -> float | None:
    """Milliseconds per statement in the sqlite3 shell: the whole batch timed, the shell's start-up taken off.

    The shell's own ``.timer`` counts whole milliseconds, too coarse for an index lookup, so
    the batch is timed from outside, with and without the statements, best of ``rounds``.
    None when there is no sqlite3 shell.
    """
    tool = shutil.which("sqlite3")
    if tool is None:
        return None

    def seconds(script: str) -> float:
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            subprocess.run([tool, "-readonly", str(db_path)], input=script, capture_output=True, text=True, check=True)
            best = min(best, time.perf_counter() - start)
        return best

    warm = "SELECT count(*) FROM devices;\n"
    empty = seconds(".output /dev/null\n" + warm)
    full = seconds(".output /dev/null\n" + warm + "".join(sql + ";\n" for sql in statements))
    return max(full - empty, 0.0) * 1000 / len(statements)


def _line(label: str, values: list[float], target: float | None = None) -> str:
    median = statistics.median(values)
    p95 = sorted(values)[max(int(len(values) * 0.95) - 1, 0)]
    text = f"  {label:<46} median {median:8.2f} ms  p95 {p95:8.2f} ms"
    if target is not None:
        verdict = "meets" if median < target else "MISSES"
        text += f"  ({verdict} the < {target:g} ms target)"
    return text


def _peer(label: str, ms: float | None, ours: float) -> None:
    if ms is None:
        print(f"  {label:<46} (no sqlite3 shell on PATH)")
        return
    print(f"  {label:<46} mean   {ms:8.2f} ms")
    if ms > 0:
        print(f"  ratio linerec/sqlite3 shell: {ours / ms:.2f}")


def report_search(root: Path, rows: int, count: int) -> None:
    rng = random.Random(7)
    with Archive(root) as archive:
        for digits_ in (3, 6):
            queries = _queries(archive, count, rng, digits_)
            for query in queries[:5]:  # warm the page cache, as a running agent would have it
                _time(archive, query)
            ours = [_time(archive, q) for q in queries]
            found = [n for _, n in ours]
            statements = [_literal(*index.search_sql(archive, q)) for q in queries]
            scans = [s.replace("INDEXED BY calls_by_caller", "NOT INDEXED") for s in statements[:3]]
            print(
                f"search over {rows} calls by a {digits_}-digit caller prefix and a 90-day range, {count} queries"
                f" ({statistics.median(found):.0f} calls found at the median, up to {max(found)}):"
            )
            median = statistics.median(ms for ms, _ in ours)
            print(_line("linerec index.search (every row as a CallRow)", [ms for ms, _ in ours], SEARCH_TARGET_MS))
            _peer("sqlite3 shell, same statements", shell_ms(root / "index.sqlite", statements), median)
            baseline = shell_ms(root / "index.sqlite", scans, rounds=1)
            if baseline is not None:
                print(f"  {'baseline: same filter without the index (scan)':<46} mean   {baseline:8.2f} ms")
        newest = index.Query(limit=50)
        _time(archive, newest)
        latest = [_time(archive, newest)[0] for _ in range(count)]
        newest_sql = _literal(*index.search_sql(archive, newest))
        window = _queries(archive, 1, rng, 3)[0]
        name = index.Query(name="caller 12", since=window.since, until=window.until)
        by_name = [_time(archive, name)[0] for _ in range(5)]
    print(f"newest 50 of {rows} calls, {count} queries:")
    print(_line("linerec index.search, limit 50", latest, NEWEST_TARGET_MS))
    _peer(
        "sqlite3 shell, same statement",
        shell_ms(root / "index.sqlite", [newest_sql] * count),
        statistics.median(latest),
    )
    print(
        f"search by name over a 90-day range (no target; reads the range): median {statistics.median(by_name):.1f} ms"
    )


# --- ingest ----------------------------------------------------------------------------------


def deliver_into(archive_dir: Path, spool_dir: Path, count: int, keys: Keys, broker: Mosquitto) -> float:
    """Seconds for the uplink child to drain ``spool_dir`` into the archive at ``archive_dir``."""
    with Archive(archive_dir) as archive:
        archive.enrol(DEVICE, keys.device_public)
        identity = age.parse_identity(keys.identity)
        ingest = Ingest(archive=archive, identities=[identity], broker=broker.settings)
        ingest.start()
        try:
            if not ingest.wait_ready(10):
                msg = f"the ingest did not subscribe at the broker on port {broker.port} within 10 s"
                raise RuntimeError(msg)
            before = ingest.stored_count
            seconds, _rss = run_uplink_child(spool_dir, broker.port, 120 + count)
            if not ingest.wait_stored(before + count, 10):
                msg = f"the spool is empty but the agent stored {ingest.stored_count - before} of {count}"
                raise RuntimeError(msg)
        finally:
            ingest.stop()
    return seconds


def report_ingest(root: Path, rows: int, args: argparse.Namespace, broker: Mosquitto, work: Path) -> None:
    size = args.ingest_kb * 1000
    recordings, keys = make_recordings(work / "sealed", args.ingest, size)
    ours: list[float] = []
    peer: list[float] = []
    counter = ByteCounter(broker)
    try:
        for run in range(args.runs):
            target = work / f"ingest-{run}"
            target.mkdir()
            shutil.copyfile(root / "index.sqlite", target / "index.sqlite")
            spool = fill_spool(work / f"spool-{run}", recordings)
            # The copy leaves hundreds of MB waiting to be written; a running agent has no such
            # backlog, and its fsyncs must not queue behind it.
            os.sync()
            ours.append(deliver_into(target, spool.root, args.ingest, keys, broker))
            peer.append(time_peer(recordings, broker, counter, 120 + args.ingest))
            with Archive(target) as archive:
                stored = index.count(archive, index.Query(device=DEVICE))
            if stored != args.ingest:
                msg = f"run {run}: the archive holds {stored} of the {args.ingest} recordings"
                raise RuntimeError(msg)
            shutil.rmtree(target)
            shutil.rmtree(spool.root)
    finally:
        counter.close()
    rate, peer_rate = args.ingest / statistics.median(ours), args.ingest / statistics.median(peer)
    verdict = "meets" if rate >= INGEST_TARGET else "MISSES"
    print(
        f"ingest into an archive of {rows} calls: {args.ingest} recordings of {args.ingest_kb} kB through"
        f" mosquitto, median of {args.runs}:"
    )
    print(
        f"  linerec Uplink -> Ingest (verified, stored, acked): {rate:7.1f} recordings/s"
        f"  runs {', '.join(f'{s:.2f}' for s in ours)} s  ({verdict} the >= {INGEST_TARGET:g}/s target)"
    )
    print(f"  mosquitto_pub -q 1 -f, one per file:              {peer_rate:7.1f} recordings/s")
    print(f"  ratio linerec/mosquitto_pub: {rate / peer_rate:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000, help="synthetic calls in the index")
    parser.add_argument("--queries", type=int, default=200, help="queries timed for each figure")
    parser.add_argument("--ingest", type=int, default=500, help="recordings in each ingest run")
    parser.add_argument("--ingest-kb", type=int, default=20, help="kB (1000 bytes) per recording")
    parser.add_argument("--runs", type=int, default=3, help="ingest runs; the median is reported")
    parser.add_argument("--cache", type=Path, help="keep the built index here and reuse it next time")
    args = parser.parse_args(argv)
    if min(args.rows, args.queries, args.ingest, args.ingest_kb, args.runs) < 1:
        parser.error("--rows, --queries, --ingest, --ingest-kb and --runs must be at least 1")
    if shutil.which("mosquitto_pub") is None or (
        shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists()
    ):
        print("mosquitto and mosquitto_pub are needed (apt install mosquitto mosquitto-clients)", file=sys.stderr)
        return 1
    try:
        with tempfile.TemporaryDirectory(prefix="linerec-archive-") as tmp:
            work = Path(tmp)
            root = cached_index(work, args.rows, args.cache)
            report_search(root, args.rows, args.queries)
            (work / "broker").mkdir()
            broker = Mosquitto(work / "broker")
            broker.start()
            try:
                report_ingest(root, args.rows, args, broker, work)
            finally:
                broker.stop()
    except (OSError, sqlite3.Error, subprocess.SubprocessError, RuntimeError, LinerecError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
