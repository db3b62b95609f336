"""Benchmark the line side: idle CPU of ``linerec run`` and GPIO edge-to-event latency.

Run ``python bench/line.py [--seconds 60] [--runs 3] [--edges 500]``.

* Idle CPU: ``linerec run`` on the simulated line, paced in real time, with a
  private mosquitto, while the line is quiet. The peer, measured over the same
  window, is the floor of any loop that handles 20 ms audio blocks: a bare
  Python process that wakes every 20 ms and does nothing else.
* GPIO latency: from a MockFactory pin edge to the state machine's event,
  through ``GpioLine.read_block``; the peer is gpiozero's own callback latency
  (pin edge to ``when_activated``), the least any gpiozero code can take.

Figures are medians over the runs, printed with the peer's and the ratio. The
benchmark reports; it never fails on a missed target.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware.wire import age  # noqa: E402
from tests.support.broker import Mosquitto  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
PEER_LOOP = """
import time
next_t = time.monotonic()
while True:
    next_t += 0.02
    time.sleep(max(0.0, next_t - time.monotonic()))
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def idle_cpu(seconds: float, work: Path, port: int) -> tuple[float, float]:
    """Percent of one core used by ``linerec run`` and by the bare 20 ms loop over the same window."""
    identity = age.generate_identity()
    config = work / "device.toml"
    config.write_text(
        f'[device]\nid = "bench-pi"\nstate_dir = "{work / "state"}"\n'
        f'[archive]\nrecipients = ["{age.recipient_of(identity)}"]\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\n'
        f"[sim]\ncalls = 1\nrealtime = true\nidle_before_s = {seconds + 60}\n"
    )
    linerec = Path(sys.executable).with_name("linerec")
    ours = subprocess.Popen([str(linerec), "run", "--config", str(config)], stderr=subprocess.DEVNULL)
    peer = subprocess.Popen([sys.executable, "-c", PEER_LOOP])
    try:
        time.sleep(5)  # start-up (imports, key creation, voice synthesis) is not idle time
        start = time.monotonic(), cpu_seconds(ours.pid), cpu_seconds(peer.pid)
        time.sleep(seconds)
        wall = time.monotonic() - start[0]
        return (
            100 * (cpu_seconds(ours.pid) - start[1]) / wall,
            100 * (cpu_seconds(peer.pid) - start[2]) / wall,
        )
    finally:
        for process in (ours, peer):
            process.terminate()
            process.wait(timeout=20)


def report_idle(seconds: float, runs: int) -> None:
    ours, peer = [], []
    with tempfile.TemporaryDirectory(prefix="linerec-bench-") as tmp:
        broker = Mosquitto(Path(tmp))
        broker.start()
        try:
            for i in range(runs):
                work = Path(tmp) / f"run{i}"
                work.mkdir()
                a, b = idle_cpu(seconds, work, broker.port)
                ours.append(a)
                peer.append(b)
        finally:
            broker.stop()
    mine, floor = statistics.median(ours), statistics.median(peer)
    print(f"idle CPU over {seconds:g} s, median of {runs} runs (percent of one core)")
    print(f"  linerec run (sim line, real time): {mine:6.2f} %   runs {', '.join(f'{x:.2f}' for x in ours)}")
    print(f"  peer: bare 20 ms Python loop:      {floor:6.2f} %   runs {', '.join(f'{x:.2f}' for x in peer)}")
    ratio = mine / floor if floor > 0 else float("inf")
    verdict = "meets" if mine < 1.0 else "misses"
    print(f"  ratio linerec/peer: {ratio:.1f}x; target < 1 % of a core: {verdict}")


def report_latency(edges: int, runs: int) -> None:
    from bench.line_gpio import gpio_edge_latency, gpiozero_callback_latency  # noqa: PLC0415

    every: list[float] = []
    ours = []
    for run in range(runs):
        latencies = [x * 1000 for x in gpio_edge_latency(edges, seed=run)]
        every += latencies
        ours.append(statistics.median(latencies))
    peer = [statistics.median(gpiozero_callback_latency(1000)) * 1000 for _ in range(runs)]
    every.sort()
    p99 = every[min(len(every) - 1, int(0.99 * len(every)))]
    mine, floor = statistics.median(ours), statistics.median(peer)
    print(f"GPIO edge to state-machine event, {edges} rings x {runs} runs (MockFactory, real time)")
    print(f"  linerec GpioLine: median {mine:7.3f} ms, p99 {p99:7.3f} ms")
    print(f"  peer: gpiozero pin edge to callback: median {floor:7.3f} ms")
    ratio = mine / floor if floor > 0 else float("inf")
    print(f"  ratio linerec/peer: {ratio:.1f}x; target median < 5 ms: {'meets' if mine < 5 else 'misses'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="idle window per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--edges", type=int, default=40, help="rings per GPIO latency run (about 0.5 s each)")
    parser.add_argument("--skip-idle", action="store_true", help="only the GPIO latency")
    args = parser.parse_args()
    report_latency(args.edges, args.runs)
    if not args.skip_idle:
        report_idle(args.seconds, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
