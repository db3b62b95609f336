"""The sound-card audio source through real PortAudio.

ALSA file devices give exact samples (and a card stuck at 48 kHz); a private
PulseAudio fed through a FIFO gives real-time pacing. PortAudio lists devices
when sounddevice is imported, so the audio code runs in a child process that
sees the devices; this process never imports sounddevice.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from firmware.capture import Device, choose_device
from firmware.line.base import LineError
from tests.support.alsa import file_devices, run_child
from tests.support.pulse import PulseServer

needs_alsa = pytest.mark.skipif(
    not Path("/usr/share/alsa/alsa.conf").exists(), reason="ALSA is not installed (make test installs it)"
)
needs_pulse = pytest.mark.skipif(
    shutil.which("pulseaudio") is None,
    reason="pulseaudio is not installed (make test installs it through scripts/bootstrap.sh)",
)

# Opens a SoundCard as the JSON in argv[1] says, reads and plays, and reports what happened as JSON.
CHILD = """
import json, sys
import numpy as np
import sounddevice as sd
from firmware.capture import SoundCard
from firmware.line.base import LineError
spec = json.loads(sys.argv[1])
card = SoundCard(device=spec["device"], sample_rate=spec["rate"], block_frames=spec["block"],
                 queue_blocks=spec.get("queue", 1000), playback=spec.get("playback", True))
try:
    card.start()
except LineError as exc:
    inputs = [[d["index"], d["name"]] for d in sd.query_devices() if d["max_input_channels"] > 0]
    print(json.dumps({"error": str(exc), "inputs": inputs}))
    sys.exit(0)
reads = [card.read(n) for n in spec["reads"]]
if spec.get("play"):
    card.play(np.fromfile(spec["play"], "<i2"))
    played = card.wait_played(10)
else:
    played = None
card.close()
np.concatenate(reads).astype("<i2").tofile(spec["captured"])
print(json.dumps({"lengths": [len(r) for r in reads], "card_rate": card.card_rate, "played": played,
                  "overflows": card.overflows, "driver_overflows": card.driver_overflows,
                  "taken": [card.take_overflows(), card.take_overflows()]}))
"""


def run_card(env: dict[str, str], **spec: Any) -> dict[str, Any]:
    """Run :data:`CHILD` with ``spec``; its JSON report."""
    result = run_child(CHILD, env, json.dumps(spec))
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def noise(seed: int, frames: int, rms: float = 3000) -> NDArray[np.int16]:
    """Seeded Gaussian noise, little-endian int16: sharp autocorrelation, easy to find again."""
    return np.clip(np.random.default_rng(seed).normal(0, rms, frames), -32768, 32767).astype("<i2")


def tone(freq: float, rate: int, frames: int, amplitude: float = 10000) -> NDArray[np.int16]:
    """A sine tone, little-endian int16."""
    return np.rint(amplitude * np.sin(2 * np.pi * freq * np.arange(frames) / rate)).astype("<i2")


def lag_of(signal: NDArray[Any], within: NDArray[Any]) -> int:
    """Where ``signal`` starts in ``within``, by cross-correlation (FFT)."""
    size = 1 << int(np.ceil(np.log2(len(signal) + len(within))))
    spectrum = np.fft.rfft(within.astype(float), size) * np.conj(np.fft.rfft(signal.astype(float), size))
    return int(np.argmax(np.fft.irfft(spectrum, size)[: len(within)]))


def peak_hz(audio: NDArray[Any], rate: int) -> float:
    """The frequency of the strongest bin of ``audio``'s spectrum."""
    spectrum = np.abs(np.fft.rfft(audio.astype(float) * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * rate / len(audio))


def level_db(audio: NDArray[Any], amplitude: float) -> float:
    """RMS of ``audio`` relative to a sine of ``amplitude``, in dB."""
    return float(20 * np.log10(np.sqrt(np.mean(audio.astype(float) ** 2)) / (amplitude / np.sqrt(2))))


# -- exact samples through ALSA file devices --------------------------------------------------------


@needs_alsa
@pytest.mark.parametrize("rate", [8000, 16000])
def test_captured_samples_are_the_line_samples_and_played_audio_reaches_the_line_out(tmp_path: Path, rate: int) -> None:
    env = file_devices(tmp_path, rate=rate)
    line = noise(3, rate)
    line.tofile(tmp_path / "in.raw")
    wanted = noise(4, 800)
    wanted.tofile(tmp_path / "play.raw")
    block = rate // 50
    # Reads of other sizes than the card's blocks still get exactly the frames asked for, in order.
    reads = [block] * 20 + [block // 2 + 3, 2 * block - 3, 7] + [block] * 10
    report = run_card(
        env,
        device="fduplex",
        rate=rate,
        block=block,
        reads=reads,
        play=str(tmp_path / "play.raw"),
        captured=str(tmp_path / "captured.raw"),
    )
    assert (report["lengths"], report["card_rate"], report["played"]) == (reads, rate, True)
    got = np.fromfile(tmp_path / "captured.raw", "<i2")
    assert np.array_equal(got, line[: sum(reads)])
    played = np.fromfile(tmp_path / "out.raw", "<i2")
    # Callback playback starts with silence: the played audio follows it, exactly.
    start = lag_of(wanted, played)
    assert np.array_equal(played[start : start + len(wanted)], wanted)
    assert not played[:start].any()


@needs_alsa
def test_a_reader_that_falls_behind_loses_blocks_and_they_are_counted_once(tmp_path: Path) -> None:
    # The file device delivers as fast as PortAudio asks: a small queue overflows at once.
    env = file_devices(tmp_path)
    np.zeros(80000, "<i2").tofile(tmp_path / "in.raw")
    report = run_card(env, device="fduplex", rate=8000, block=160, queue=2, reads=[160] * 5, captured="/dev/null")
    assert report["overflows"] > 0
    assert report["taken"] == [report["overflows"] + report["driver_overflows"], 0]


@needs_alsa
def test_a_card_that_runs_only_at_48_khz_is_resampled_to_and_from_the_line_rate(tmp_path: Path) -> None:
    env = file_devices(tmp_path, rate=48000)
    tone(1000, 48000, 2 * 48000).tofile(tmp_path / "in.raw")
    tone(1000, 8000, 4000).tofile(tmp_path / "play.raw")
    reads = [160] * 75
    report = run_card(
        env,
        device="fcard",
        rate=8000,
        block=160,
        reads=reads,
        play=str(tmp_path / "play.raw"),
        captured=str(tmp_path / "captured.raw"),
    )
    assert (report["lengths"], report["card_rate"], report["played"]) == (reads, 48000, True)
    got = np.fromfile(tmp_path / "captured.raw", "<i2")[800:]  # past the resampler's start-up edge
    assert peak_hz(got[:8000], 8000) == pytest.approx(1000, abs=1)
    assert level_db(got, 10000) == pytest.approx(0, abs=0.2)

    played = np.fromfile(tmp_path / "out.raw", "<i2")
    sounding = np.flatnonzero(np.abs(played) > 1000)
    assert sounding[-1] - sounding[0] == pytest.approx(24000, abs=12)  # 0.5 s at 48 kHz
    middle = played[sounding[0] + 2400 : sounding[0] + 21600]
    assert peak_hz(middle, 48000) == pytest.approx(1000, abs=2.5)
    assert level_db(middle, 10000) == pytest.approx(0, abs=0.2)


@needs_alsa
def test_a_missing_sound_device_is_one_error_that_lists_the_input_devices(tmp_path: Path) -> None:
    report = run_card(file_devices(tmp_path), device="no such card", rate=8000, block=160, reads=[], captured="")
    listing = ", ".join(f"{index} {name!r}" for index, name in report["inputs"])
    assert report["error"] == f"sound device 'no such card' not found; input devices: {listing}"
    assert {"fcap", "fduplex", "fcard"} <= {name for _index, name in report["inputs"]}


@needs_alsa
def test_a_card_that_runs_at_none_of_the_rates_is_one_error_naming_them(tmp_path: Path) -> None:
    report = run_card(file_devices(tmp_path, rate=11025), device="fcard", rate=8000, block=160, reads=[], captured="")
    index = next(index for index, name in report["inputs"] if name == "fcard")
    assert report["error"] == (
        f"sound device {index} 'fcard' cannot run at 8000 Hz, nor at 48000, 44100 or 16000 Hz to resample from: "
        "Unanticipated host error [PaErrorCode -9999]: 'No such file or directory' [ALSA error -2]"
    )


# -- real-time pacing through PulseAudio ------------------------------------------------------------


@pytest.fixture
def pulse() -> Iterator[PulseServer]:
    """A private PulseAudio whose default source is a FIFO at 8 kHz."""
    with PulseServer(rate=8000) as server:
        yield server


def feed_in_real_time(fifo: Path, audio: NDArray[np.int16], rate: int, stop: threading.Event) -> None:
    """Write ``audio`` to ``fifo`` 20 ms at a time, on the wall clock, as a line would deliver it."""
    step = rate // 50
    fd = os.open(fifo, os.O_WRONLY)
    try:
        start = time.monotonic()
        for at in range(0, len(audio), step):
            if stop.is_set():
                return
            os.write(fd, audio[at : at + step].tobytes())
            time.sleep(max(0.0, start + (at + step) / rate - time.monotonic()))
    finally:
        os.close(fd)


@needs_alsa
@needs_pulse
def test_thirty_seconds_from_a_real_time_source_arrive_whole_without_overflows(
    pulse: PulseServer, tmp_path: Path
) -> None:
    seconds, rate = 30, 8000
    line = noise(5, (seconds + 8) * rate)  # the child starts a moment after the line does
    stop = threading.Event()
    writer = threading.Thread(target=feed_in_real_time, args=(pulse.fifo, line, rate, stop), daemon=True)
    writer.start()
    try:
        report = run_card(
            pulse.env,
            device="pulse",
            rate=rate,
            block=160,
            queue=100,
            reads=[160] * (seconds * 50),
            captured=str(tmp_path / "captured.raw"),
        )
    finally:
        stop.set()
        writer.join()
    assert (report["overflows"], report["driver_overflows"], report["taken"]) == (0, 0, [0, 0])
    got = np.fromfile(tmp_path / "captured.raw", "<i2")
    assert len(got) == seconds * rate
    # PulseAudio may start with latency or silence: find the line in the middle, then check all of it
    # after the first second lines up, which a single lost or repeated block would break.
    middle = got[15 * rate : 16 * rate]
    lag = lag_of(middle, line) - 15 * rate
    assert lag >= 0
    assert np.corrcoef(got[rate:], line[lag + rate : lag + len(got)])[0, 1] > 0.999


# -- choosing the device ----------------------------------------------------------------------------

DEVICES = [
    Device(0, "bcm2835 Headphones: - (hw:0,0)", "ALSA", 0, 8),
    Device(1, "USB Audio Device: - (hw:1,0)", "ALSA", 1, 2),
    Device(2, "USB Audio Device: - (hw:2,0)", "ALSA", 1, 2),
    Device(3, "pulse", "ALSA", 32, 32),
    Device(4, "pulse monitor", "ALSA", 2, 0),
]


def test_a_device_is_found_by_words_of_its_name_in_order_or_by_index() -> None:
    assert choose_device(DEVICES, "hw:2").index == 2
    assert choose_device(DEVICES, "usb (hw:1").index == 1
    assert choose_device(DEVICES, 3).name == "pulse"


def test_a_name_that_is_exactly_one_devices_name_wins_over_longer_matches() -> None:
    assert choose_device(DEVICES, "Pulse").index == 3


def test_a_name_that_matches_several_devices_is_an_error_listing_them() -> None:
    with pytest.raises(LineError) as caught:
        choose_device(DEVICES, "USB Audio")
    assert str(caught.value) == (
        "sound device 'USB Audio' matches several input devices: "
        "1 'USB Audio Device: - (hw:1,0)', 2 'USB Audio Device: - (hw:2,0)'; give its index or a longer name"
    )


def test_a_name_that_matches_no_input_device_is_an_error_listing_them() -> None:
    inputs = "1 'USB Audio Device: - (hw:1,0)', 2 'USB Audio Device: - (hw:2,0)', 3 'pulse', 4 'pulse monitor'"
    with pytest.raises(LineError) as caught:
        choose_device(DEVICES, "Headphones")  # output only
    assert str(caught.value) == f"sound device 'Headphones' not found; input devices: {inputs}"
    with pytest.raises(LineError) as caught:
        choose_device(DEVICES, 9)
    assert str(caught.value) == f"sound device 9 not found; input devices: {inputs}"
    with pytest.raises(LineError) as caught:
        choose_device(DEVICES, 0)
    assert str(caught.value) == f"sound device 0 'bcm2835 Headphones: - (hw:0,0)' has no input; input devices: {inputs}"
    with pytest.raises(LineError) as caught:
        choose_device([], "USB")
    assert str(caught.value) == "sound device 'USB' not found; input devices: none"
