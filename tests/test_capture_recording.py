"""A call recorded from a real PortAudio device holds exactly the samples the card gave, from the pre-roll on.

An ALSA ``file`` device plays a known file into the sound card; a backend of
the test's own says when the phone went off-hook and back. (The file device is
not paced, so overflows mean nothing here; tests/test_capture.py counts them
on a real-time PulseAudio source.) The service records
through the card as it would on the board. PortAudio lists devices when
sounddevice is imported, so the recording runs in a child process.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from firmware.spool import AUDIO_NAME, MANIFEST_NAME, ORIGINAL_NAME
from firmware.wire import age
from firmware.wire.manifest import Manifest
from tests.support.alsa import file_devices, run_child

pytestmark = pytest.mark.skipif(
    not Path("/usr/share/alsa/alsa.conf").exists(), reason="ALSA is not installed (make test installs it)"
)

IDENTITY = age.generate_identity()

CHILD = """
import json, sys
from pathlib import Path
from firmware.capture import SoundCard
from firmware.config import ArchiveSettings, AudioSettings, DeviceConfig, DeviceSettings
from firmware.line.base import LineBackend, LineBlock, OffHook, OnHook
from firmware.service import DeviceService
from firmware.spool import Spool
from firmware.wire.signing import load_or_create_signing_key

spec = json.loads(sys.argv[1])
# The file device is not paced: it delivers as fast as it can, so the queue holds the whole file.
card = SoundCard(device="fcap", sample_rate=8000, block_frames=160, playback=False, queue_blocks=2000)

class PhoneOnACard(LineBackend):
    # The card's audio, and the phone picked up and put down at the blocks the test names.
    name, sample_rate, block_frames = "card", 8000, 160
    def __init__(self):
        self.n = 0
    def start(self):
        card.start()
    def read_block(self):
        if self.n == spec["blocks"]:
            return None
        t = 1.79e9 + self.n * 0.02
        events = (OffHook(t),) if self.n == spec["off"] else (OnHook(t),) if self.n == spec["on"] else ()
        self.n += 1
        return LineBlock(t, events, card.read(160))
    def take_overflows(self):
        return card.take_overflows()
    def set_hook(self, off_hook):
        pass
    def play(self, audio):
        pass
    def close(self):
        card.close()

config = DeviceConfig(
    device=DeviceSettings(id="pi-card", state_dir=Path(spec["state"])),
    archive=ArchiveSettings(recipients=(spec["recipient"],)),
    audio=AudioSettings(keep_original=True),
)
with PhoneOnACard() as line:
    service = DeviceService(
        config=config, backend=line, spool=Spool(config.device.spool_dir),
        signing_key=load_or_create_signing_key(config.device.signing_key_path),
    )
    print(json.dumps({"recorded": service.run()}))
"""


def decrypt(path: Path) -> bytes:
    return age.decrypt_bytes(path.read_bytes(), [age.parse_identity(IDENTITY)])


def test_a_call_through_a_real_sound_device_keeps_every_sample_from_a_second_before_the_answer(
    tmp_path: Path,
) -> None:
    env = file_devices(tmp_path)
    fed = np.clip(np.random.default_rng(9).normal(0, 3000, 800 * 160), -32768, 32767).astype("<i2")
    fed.tofile(tmp_path / "in.raw")
    spec = {"state": str(tmp_path / "device"), "recipient": age.recipient_of(IDENTITY), "blocks": 760}
    spec |= {"off": 300, "on": 700}

    result = run_child(CHILD, env, json.dumps(spec))

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    [rec_id] = report["recorded"]
    folder = tmp_path / "device" / "spool" / "outbox" / rec_id
    original, rate = sf.read(io.BytesIO(decrypt(folder / ORIGINAL_NAME)), dtype="int16")
    assert rate == 8000
    # From one second (the pre-roll) before the off-hook block to the on-hook block.
    assert np.array_equal(original, fed[300 * 160 - 8000 : 700 * 160])
    doc = json.loads(decrypt(folder / MANIFEST_NAME))
    manifest = Manifest.from_json(doc["manifest"].encode())
    assert manifest.audio["preroll_s"] == 1.0
    assert manifest.audio["audio_started_at"] == "2026-09-21T14:13:25.000Z"
    assert (folder / AUDIO_NAME).is_file()


SELFTEST = """
import sys
from pathlib import Path
from firmware.config import parse
from firmware.selftest import check_sound
config = parse({
    "device": {"id": "pi", "line": "gpio"},
    "archive": {"recipients": [sys.argv[2]]},
    "gpio": {"audio_device": sys.argv[1]},
})
print(check_sound(config).line())
"""


@pytest.mark.parametrize(
    ("device", "card_rate", "line"),
    [
        ("fduplex", 8000, "[ ok ] sound device: fduplex records and plays mono at 8000 Hz"),
        (
            "fcard",
            48000,
            "[ ok ] sound device: fcard records and plays mono at 8000 Hz, resampled from the card's 48000 Hz",
        ),
    ],
)
def test_selftest_opens_the_card_as_the_recorder_will(tmp_path: Path, device: str, card_rate: int, line: str) -> None:
    env = file_devices(tmp_path, rate=card_rate)
    np.zeros(48000, "<i2").tofile(tmp_path / "in.raw")
    result = run_child(SELFTEST, env, device, age.recipient_of(IDENTITY))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == line
