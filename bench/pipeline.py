"""Benchmark the recording pipeline: clean, VAD-trim, FLAC, age and journal, against sox + the age tool.

Run ``python bench/pipeline.py [--minutes 60] [--runs 3]``.

* Speed: the same hour of 8 kHz telephone-band speech with pauses (generated,
  seeded) goes through linerec's recorder (``CallRecorder``: line cleaner,
  webrtcvad trimming, FLAC, age encryption and the crash journal, block by
  block as a call would) and through what a user would script instead: sox's
  ``silence`` effect trimming to FLAC, then the ``age`` command. Medians of
  ``--runs`` runs, each in a fresh child process, one core each.
* Memory: the peak RSS of a child recording a 2-minute call and a 2-hour call;
  flat memory means the second is at most 1.1 times the first (and both at most
  80 MB).

It reports and never fails on a missed target.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware.line.speech import SynthVoice, to_telephone_band  # noqa: E402
from firmware.wire import age  # noqa: E402

RATE = 8000
BLOCK = 160  # 20 ms, as the line delivers it
SENTENCES = (
    "good morning, thank you for calling, how can I help you today",
    "I would like to ask about the bill I received last week",
    "of course, could you give me the account number please",
    "it is four four seven two one nine, under the name of Smith",
    "thank you, one moment while I look that up for you",
    "I can see two charges on the third of the month",
    "the second one should not be there, I already paid it",
    "you are right, I will take it off and send a new bill",
    "is there anything else I can help you with today",
    "no that is all, thank you very much, goodbye",
)


def make_call(path: Path, minutes: float, seed: int = 1) -> None:
    """A call of ``minutes``: utterances from two voices with pauses of 0.3-20 s and line noise, as WAV."""
    rng = np.random.default_rng(seed)
    voices = {who: SynthVoice(seed=seed) for who in ("caller", "callee")}
    said = [
        voices["caller" if i % 2 else "callee"].say(s, "caller" if i % 2 else "callee", RATE)
        for i, s in enumerate(SENTENCES)
    ]
    total = int(minutes * 60 * RATE)
    written = 0
    with sf.SoundFile(path, "w", RATE, 1, subtype="PCM_16", format="WAV") as out:
        while written < total:
            gap = float(rng.choice([0.3, 0.6, 1.0, 1.5, 4.0, 20.0], p=[0.3, 0.25, 0.2, 0.1, 0.1, 0.05]))
            piece = np.concatenate([said[int(rng.integers(len(said)))], np.zeros(int(gap * RATE), np.int16)])
            piece = piece[: total - written].astype(np.float64)
            noise = to_telephone_band(rng.standard_normal(len(piece)), RATE, RATE) * 30
            out.write(np.clip(np.rint(piece + noise), -32768, 32767).astype(np.int16))
            written += len(piece)


# The child's work: record the WAV as a call arrives, 20 ms at a time. "pipeline" is what the
# issue names (filter, VAD, FLAC, age) in the recorder's half-second batches; "recorder" is the
# whole CallRecorder: that plus DTMF, the untrimmed journal and its fsync once a second of audio.
CHILD = """
import sys, time
from pathlib import Path
import soundfile as sf
from firmware.calls import Call, CallState, HangupCause
from firmware.config import ArchiveSettings, AudioSettings, DeviceConfig, DeviceSettings
from firmware.encoder import EncryptedAudioWriter
from firmware.processing import AudioChain
from firmware.recorder import CallRecorder
from firmware.spool import Spool
from firmware.wire.signing import load_or_create_signing_key

what, source, state, recipient = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
with sf.SoundFile(source) as f:
    blocks = list(f.blocks(blocksize=160, dtype="int16")) if what != "memory" else None
start, cpu = time.perf_counter(), time.process_time()
if what == "pipeline":
    chain = AudioChain(AudioSettings(), 8000)
    writer = EncryptedAudioWriter(state / "a.age", recipients=(recipient,), sample_rate=8000)
    for i in range(0, len(blocks), 25):
        import numpy as np
        writer.write(chain.process(np.concatenate(blocks[i : i + 25])))
    writer.write(chain.flush())
    writer.close()
else:
    config = DeviceConfig(
        device=DeviceSettings(id="bench", state_dir=state), archive=ArchiveSettings(recipients=(recipient,))
    )
    recorder = CallRecorder(
        config=config, spool=Spool(config.device.spool_dir),
        signing_key=load_or_create_signing_key(config.device.signing_key_path), sample_rate=8000,
    )
    recorder.start(1.79e9)
    seconds = 0.0
    with sf.SoundFile(source) as f:
        for block in (blocks if blocks is not None else f.blocks(blocksize=160, dtype="int16")):
            recorder.write(block)
            seconds += len(block) / 8000
    call = Call(CallState.ENDED, answered_at=1.79e9, ended_at=1.79e9 + seconds, hangup_cause=HangupCause.LOCAL_ONHOOK)
    recorder.finish(call)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the parent that started us.
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(time.perf_counter() - start, time.process_time() - cpu, hwm / 1024)
"""


def run_ours(what: str, source: Path, work: Path, recipient: str) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and the child's peak RSS in MB for ``what`` on ``source``."""
    state = Path(tempfile.mkdtemp(dir=work))
    argv = [sys.executable, "-c", CHILD, what, str(source), str(state), recipient]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall, cpu, rss = out.stdout.split()
    shutil.rmtree(state)
    return float(wall), float(cpu), float(rss)


def run_peer(source: Path, work: Path, recipient: str) -> float:
    """Seconds for sox silence trimming to FLAC, then age -e: what a user would script."""
    flac, sealed = work / "peer.flac", work / "peer.flac.age"
    start = time.perf_counter()
    # Cut silences over 2 s of quieter than -45 dBFS (as the recorder's defaults), keep the rest.
    trim = ["silence", "-l", "1", "0.1", "-45d", "-1", "2.0", "-45d"]
    subprocess.run(["sox", str(source), str(flac), *trim], check=True)
    subprocess.run(["age", "-e", "-r", recipient, "-o", str(sealed), str(flac)], check=True)
    elapsed = time.perf_counter() - start
    flac.unlink()
    sealed.unlink()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the call for the speed run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--long-minutes", type=float, default=120.0, help="the long call of the memory run")
    args = parser.parse_args()
    missing = [tool for tool in ("sox", "age") if shutil.which(tool) is None]
    if missing:
        print(f"the peers {', '.join(missing)} are not installed (make bench installs them)", file=sys.stderr)
        return 1
    recipient = age.recipient_of(age.generate_identity())
    with tempfile.TemporaryDirectory(prefix="linerec-pipeline-") as tmp:
        work = Path(tmp)
        call = work / "call.wav"
        make_call(call, args.minutes)
        audio_s = args.minutes * 60
        runs: dict[str, list[tuple[float, float, float]]] = {"pipeline": [], "recorder": []}
        peers = []
        for _ in range(args.runs):
            for what, results in runs.items():
                results.append(run_ours(what, call, work, recipient))
            peers.append(run_peer(call, work, recipient))
        peer = statistics.median(peers)
        print(f"speed on {args.minutes:g} min of 8 kHz speech with pauses, median of {args.runs} (one core each):")
        print(f"  sox silence trim to FLAC, then age -e:     {peer:6.2f} s = {audio_s / peer:6.0f}x real time")
        for what, label in (
            ("pipeline", "linerec filter + VAD + FLAC + age"),
            ("recorder", "linerec whole recorder (+ DTMF, journal)"),
        ):
            wall = statistics.median(r[0] for r in runs[what])
            cpu = statistics.median(r[1] for r in runs[what])
            print(
                f"  {label + ':':<43}{wall:6.2f} s = {audio_s / wall:6.0f}x real time"
                f" ({cpu:.2f} s CPU); {wall / peer:.2f}x the peer's time"
            )
        print("  targets: the pipeline faster than the peer and >= 1000x real time; the journal's fsync")
        print("  (one a second of audio) is I/O wait the whole-recorder line shows apart from its CPU time")

        short, long_ = work / "short.wav", work / "long.wav"
        make_call(short, 2.0, seed=2)
        make_call(long_, args.long_minutes, seed=3)
        short_rss = statistics.median(run_ours("memory", short, work, recipient)[2] for _ in range(args.runs))
        long_rss = statistics.median(run_ours("memory", long_, work, recipient)[2] for _ in range(args.runs))
        print(
            f"peak RSS of the whole recorder, median of {args.runs}: 2-minute call {short_rss:.1f} MB,"
            f" {args.long_minutes:g}-minute call {long_rss:.1f} MB"
        )
        print(f"  ratio long/short: {long_rss / short_rss:.2f} (target <= 1.1; both <= 80 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
