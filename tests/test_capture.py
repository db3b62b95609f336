"""The sound-card audio source through real PortAudio, on ALSA file devices (exact samples)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.support.alsa import file_devices, run_child

pytestmark = pytest.mark.skipif(not Path("/usr/share/alsa/alsa.conf").exists(), reason="ALSA is installed by make test")

CHILD = """
import json, sys, time
import numpy as np
from firmware.capture import SoundCard
card = SoundCard(device="fduplex", sample_rate=8000, block_frames=160, queue_blocks={queue})
card.start()
blocks = [card.read(160) for _ in range({blocks})]
card.play((np.arange(800) % 100 + 1000).astype(np.int16))
deadline = time.monotonic() + 5
while card.playing and time.monotonic() < deadline:
    time.sleep(0.01)
time.sleep(0.2)
card.close()
np.concatenate(blocks).astype("<i2").tofile(sys.argv[1] if len(sys.argv) > 1 else "{captured}")
print(json.dumps({{"overflows": card.overflows}}))
"""


def test_captured_blocks_are_the_line_samples_and_played_audio_reaches_the_line_out(tmp_path: Path) -> None:
    env = file_devices(tmp_path)
    line = (np.random.default_rng(3).normal(0, 3000, 8000)).astype("<i2")
    line.tofile(tmp_path / "in.raw")
    captured = tmp_path / "captured.raw"
    result = run_child(CHILD.format(queue=1000, blocks=40, captured=captured), env)
    assert result.returncode == 0, result.stderr
    got = np.fromfile(captured, "<i2")
    assert len(got) == 40 * 160
    assert np.array_equal(got, line[: len(got)])
    played = np.fromfile(tmp_path / "out.raw", "<i2")
    wanted = (np.arange(800) % 100 + 1000).astype("<i2")
    # Callback playback starts with silence: find the tone by correlation of positions.
    starts = np.flatnonzero(played == wanted[0])
    assert any(np.array_equal(played[s : s + 800], wanted) for s in starts)


def test_a_reader_that_falls_behind_loses_blocks_and_they_are_counted(tmp_path: Path) -> None:
    # The file device delivers as fast as PortAudio asks: a small queue overflows at once.
    env = file_devices(tmp_path)
    (np.zeros(80000, "<i2")).tofile(tmp_path / "in.raw")
    result = run_child(CHILD.format(queue=2, blocks=5, captured=tmp_path / "c.raw"), env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["overflows"] > 0


def test_a_missing_sound_device_is_one_clear_error(tmp_path: Path) -> None:
    env = file_devices(tmp_path)
    code = (
        "from firmware.capture import SoundCard\n"
        "from firmware.line.base import LineError\n"
        "try:\n"
        "    SoundCard(device='no such card', sample_rate=8000, block_frames=160).start()\n"
        "except LineError as e:\n"
        "    print(e)\n"
    )
    result = run_child(code, env)
    assert result.stdout.startswith("sound device no such card cannot run at 8000 Hz: ")
