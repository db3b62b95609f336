"""Benchmark the telephony decoders against minimodem and multimon-ng on the same generated files.

Run ``python bench/dsp.py [--trials 20] [--talkoff-minutes 60]``.

* Caller ID: random callers (number, name, time, absence) in every standard,
  modulated, with white noise limited to 300-3400 Hz at each SNR (burst power
  over noise power in that band). A decode counts only if number, name, time
  and absence all match. The same WAV files go to minimodem (``callerid``) and
  multimon-ng (``CLIPFSK``, and ``DTMF`` for DTMF caller ID). False messages are
  counted on speech-only and noise-only audio.
* DTMF: every Q.24 boundary case, ours and multimon-ng's; talk-off over
  espeak-ng speech; each decoder's speed on 60 s of audio (whole-file API).

It reports; it never fails on a missed target.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import soundfile as sf
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware.dsp.callerid import decode_callerid, fsk_callerid_audio  # noqa: E402
from firmware.dsp.cidmessage import encode_mdmf, encode_sdmf  # noqa: E402
from firmware.dsp.dtmf import detect_dtmf, generate_dtmf  # noqa: E402
from firmware.dsp.tones import detect_tones  # noqa: E402
from firmware.line.speech import SynthVoice, to_telephone_band  # noqa: E402

RATE = 8000
SNRS: tuple[float | None, ...] = (None, 20.0, 12.0, 9.0, 6.0, 3.0)
STANDARDS = ("bell202-sdmf", "bell202-mdmf", "etsi-v23", "dtmf")
ABSENCE = {"P": "private", "O": "unavailable"}


@dataclass(frozen=True)
class Caller:
    number: str | None
    name: str | None
    time: str  # MMDDHHMM
    absence: str | None  # "P", "O" or None

    def when(self) -> datetime:
        return datetime(2026, int(self.time[:2]), int(self.time[2:4]), int(self.time[4:6]), int(self.time[6:]))


def random_caller(rng: random.Random, standard: str) -> Caller:
    when = f"{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 23):02d}{rng.randint(0, 59):02d}"
    roll = rng.random()
    absence = "P" if roll < 0.2 else "O" if roll < 0.3 else None
    number = None if absence else "".join(rng.choice("0123456789") for _ in range(10))
    named = standard in ("bell202-mdmf", "etsi-v23") and absence is None
    name = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ ") for _ in range(rng.randint(4, 15))).strip() or "X"
    return Caller(number, name if named else None, when, absence)


def burst(caller: Caller, standard: str) -> NDArray[np.float64]:
    """The caller ID as line audio, float in [-1, 1]."""
    if standard == "dtmf":
        code = {"P": "B10", "O": "B00"}.get(caller.absence or "", caller.number or "")
        return generate_dtmf(f"A{code}C", RATE, level_dbfs=-10.0)
    if standard == "bell202-sdmf":
        message = encode_sdmf(number=caller.number, number_absent=caller.absence, when=caller.when())
    else:
        message = encode_mdmf(
            number=caller.number,
            name=caller.name,
            number_absent=caller.absence,
            name_absent=caller.absence,
            when=caller.when(),
        )
    modulation = "v23" if standard == "etsi-v23" else "bell202"
    return fsk_callerid_audio(message, standard=modulation, sample_rate=RATE)


def noisy(signal: NDArray[np.float64], snr_db: float | None, rng: np.random.Generator) -> NDArray[np.float64]:
    """Half a second of line either side, and band-limited white noise at ``snr_db`` (None: clean)."""
    pad = np.zeros(RATE // 2)
    x = np.concatenate([pad, signal, pad])
    if snr_db is None:
        return x
    noise = to_telephone_band(rng.standard_normal(len(x)), RATE, RATE)
    power = float(np.mean(signal**2))
    noise *= np.sqrt(power / 10 ** (snr_db / 10) / float(np.mean(noise**2)))
    return x + noise


def ours(path: Path, standard: str) -> list[Caller]:
    audio, rate = sf.read(path, dtype="int16")
    wanted = "dtmf" if standard == "dtmf" else "auto"
    found = []
    for d in decode_callerid(audio, rate, standard=wanted):
        if d.caller_id is None:
            continue
        absence = {"private": "P", "unavailable": "O"}.get(d.number_absence or "")
        found.append(Caller(d.number, d.name, d.time or "", absence))
    return found


def _run(argv: list[str]) -> str:
    """A peer's output; noise can make it print bytes that are not text."""
    out = subprocess.run(argv, capture_output=True, timeout=60, check=False).stdout
    return out.decode("utf-8", errors="replace")


def minimodem(path: Path, standard: str) -> list[Caller] | None:
    if standard == "dtmf":
        return None  # minimodem has no DTMF decoder
    args = ["minimodem", "--rx", "-q", "-f", str(path)]
    if standard == "etsi-v23":
        args += ["-M", "1300", "-S", "2100"]
    out = _run([*args, "callerid"])
    found = []
    for block in out.split("CALLER-ID")[1:]:
        when = re.search(r"Time:\s+(\d\d)/(\d\d) (\d\d):(\d\d)", block)
        phone = re.search(r"Phone:\s+(.+)", block)
        name = re.search(r"Name:\s+(.+)", block)
        number, absence = None, None
        if phone:
            text = phone.group(1).strip()
            absence = {"[blocked]": "P", "[N/A]": "O"}.get(text)
            number = None if absence else text.replace("-", "")
        found.append(
            Caller(
                number,
                name.group(1).strip() if name and not name.group(1).startswith("[") else None,
                "".join(when.groups()) if when else "",
                absence,
            )
        )
    return found


def multimon(path: Path, standard: str) -> list[Caller]:
    mode = "DTMF" if standard == "dtmf" else "CLIPFSK"
    out = _run(["multimon-ng", "-q", "-c", "-a", mode, "-t", "wav", str(path)])
    if standard == "dtmf":
        digits = "".join(re.findall(r"DTMF: (\S)", out))
        match = re.fullmatch(r"A(\d+|B10|B00)C", digits)
        if not match:
            return []
        code = match.group(1)
        absence = {"B10": "P", "B00": "O"}.get(code)
        return [Caller(None if absence else code, None, "", absence)]
    found = []
    for line in out.splitlines():
        if not line.startswith("CLIPFSK:"):
            continue
        when = re.search(r"DATE=(\d{8})", line)
        number = re.search(r"CID=(\d+)", line)
        name = re.search(r"CNT=(.+?)(?: RACNT=|$)", line)
        absent = re.search(r"RACLI=([OP])", line)
        found.append(
            Caller(
                number.group(1) if number else None,
                name.group(1).strip() if name else None,
                when.group(1) if when else "",
                absent.group(1) if absent else None,
            )
        )
    return found


def matches(found: list[Caller], want: Caller, standard: str) -> bool:
    if standard == "dtmf":  # DTMF caller ID carries neither name nor time
        return any((c.number, c.absence) == (want.number, want.absence) for c in found)
    return any(c == want for c in found)


DECODERS: dict[str, Callable[[Path, str], list[Caller] | None]] = {
    "linerec": ours,
    "minimodem": minimodem,
    "multimon-ng": multimon,
}


def report_callerid(trials: int, work: Path) -> None:
    rng = random.Random(7)
    nrng = np.random.default_rng(7)
    print(f"caller ID: correct decodes out of {trials} per standard and SNR (number, name, time, absence all match)")
    names = [n for n in DECODERS if n == "linerec" or shutil.which(n)]
    print(f"  {'standard':<14} {'SNR':>6}  " + "  ".join(f"{n:>11}" for n in names))
    for standard in STANDARDS:
        for snr in SNRS:
            counts: dict[str, int | None] = dict.fromkeys(names, 0)
            for i in range(trials):
                caller = random_caller(rng, standard)
                path = work / f"{standard}-{snr}-{i}.wav"
                sf.write(path, 0.5 * noisy(burst(caller, standard), snr, nrng), RATE, subtype="PCM_16")
                for name in names:
                    found = DECODERS[name](path, standard)
                    counts[name] = None if found is None else (counts[name] or 0) + matches(found, caller, standard)
                path.unlink()
            label = "clean" if snr is None else f"{snr:g} dB"
            cells = ("-" if counts[n] is None else str(counts[n]) for n in names)
            print(f"  {standard:<14} {label:>6}  " + "  ".join(f"{c:>11}" for c in cells))


def report_false_messages(work: Path) -> None:
    voice = SynthVoice(seed=3)
    speech = np.concatenate([voice.say("some words", "caller", RATE) for _ in range(60)])
    noise = to_telephone_band(np.random.default_rng(5).standard_normal(RATE * 120), RATE, RATE) * 3000
    print("false caller ID messages (any decode at all)")
    for label, audio in (("speech", speech.astype(np.float64)), ("noise", noise)):
        path = work / f"{label}.wav"
        sf.write(path, np.clip(audio / 32768, -1, 1), RATE, subtype="PCM_16")
        counts = [
            sum(len(DECODERS[n](path, std) or []) for std in ("bell202-mdmf", "etsi-v23", "dtmf"))
            for n in DECODERS
            if n == "linerec" or shutil.which(n)
        ]
        minutes = len(audio) / RATE / 60
        pairs = zip(DECODERS, counts, strict=False)
        print(f"  {label} ({minutes:.1f} min): " + ", ".join(f"{n} {c}" for n, c in pairs))


def report_dtmf(minutes: float) -> None:
    from bench.dtmf_talkoff import q24_cases, q24_cases_multimon, talkoff  # noqa: PLC0415

    for label, cases in (("linerec", q24_cases()), ("multimon-ng", q24_cases_multimon())):
        passed = sum(expected == got for _, expected, got in cases)
        failed = [name for name, expected, got in cases if expected != got]
        fails = f"; fails: {', '.join(failed)}" if failed else ""
        print(f"DTMF Q.24 cases, {label}: {passed}/{len(cases)} pass{fails}")
    mine, peer, used = talkoff(minutes)
    print(f"DTMF talk-off over {used:.1f} min of espeak-ng speech: linerec {mine} false digits, multimon-ng {peer}")
    print(f"  per hour: linerec {mine * 60 / used:.1f}, multimon-ng {peer * 60 / used:.1f} (target <= 5 for linerec)")


def report_speed(runs: int = 5) -> None:
    rng = np.random.default_rng(1)
    minute = (to_telephone_band(rng.standard_normal(RATE * 60), RATE, RATE) * 2000).astype(np.int16)
    print("speed on 60 s of 8 kHz audio (whole-file API, one core), median of 5")
    for label, run in (
        ("caller ID (auto)", lambda: decode_callerid(minute, RATE)),
        ("caller ID (dtmf)", lambda: decode_callerid(minute, RATE, standard="dtmf")),
        ("DTMF", lambda: detect_dtmf(minute, RATE)),
        ("tones (US)", lambda: detect_tones(minute, RATE, country="US")),
    ):
        run()  # warm caches
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        print(f"  {label:<18} {median * 1000:7.1f} ms = {60 / median:7.0f}x real time (target >= 500x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="callers per standard and SNR")
    parser.add_argument("--talkoff-minutes", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="linerec-dsp-") as tmp:
        work = Path(tmp)
        report_speed()
        report_callerid(args.trials, work)
        report_false_messages(work)
        report_dtmf(args.talkoff_minutes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
