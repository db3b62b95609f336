"""Sound devices without a sound card: PortAudio through ALSA's ``file`` plugin.

``fcap`` reads samples from a raw file and ``fplay`` writes what is played to
another, exactly and without real-time pacing; ``fduplex`` is both in one
device. They convert any rate to the files' rate, as ALSA's ``plug`` does.

``fcard`` is the same pair as a USB card that runs at the files' rate only: its
``plug`` is given a rate converter that does not exist, so it still converts
format and channels but fails to open at any other rate (PortAudio reports an
ALSA error -2, "No such file or directory", where a real card says "Invalid
sample rate"). ALSA has no plugin that refuses rates without a kernel card.

PortAudio lists devices when sounddevice is imported, so a test runs its audio
code in a child process whose ``ALSA_CONFIG_PATH`` names the config made here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def file_devices(folder: Path, rate: int = 8000) -> dict[str, str]:
    """Write an ALSA config with the file devices in ``folder``; the child's environment.

    Capture reads ``folder/in.raw`` and playback writes ``folder/out.raw``, both
    S16_LE mono at ``rate``.
    """
    conf = folder / "asound.conf"
    infile, outfile = folder / "in.raw", folder / "out.raw"
    infile.touch()
    fixed = f'format S16_LE; rate {rate}; channels 1 }}; rate_converter "linerec_test_refuses_other_rates" }}'
    conf.write_text(
        f'pcm.fcap_raw {{ type file; slave.pcm "null"; file "/dev/null"; infile "{infile}"; format "raw" }}\n'
        f'pcm.fcap {{ type plug; slave {{ pcm "fcap_raw"; format S16_LE; rate {rate}; channels 1 }} }}\n'
        f'pcm.fplay_raw {{ type file; slave.pcm "null"; file "{outfile}"; format "raw" }}\n'
        f'pcm.fplay {{ type plug; slave {{ pcm "fplay_raw"; format S16_LE; rate {rate}; channels 1 }} }}\n'
        'pcm.fduplex { type asym; playback.pcm "fplay"; capture.pcm "fcap" }\n'
        f'pcm.fcard_in {{ type plug; slave {{ pcm "fcap_raw"; {fixed}\n'
        f'pcm.fcard_out {{ type plug; slave {{ pcm "fplay_raw"; {fixed}\n'
        'pcm.fcard { type asym; playback.pcm "fcard_out"; capture.pcm "fcard_in" }\n'
    )
    return {**os.environ, "ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{conf}", "PYTHONPATH": str(ROOT)}


def run_child(code: str, env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` (with ``args`` as ``sys.argv[1:]``) in a child that sees the devices ``env`` sets up."""
    argv = [sys.executable, "-c", code, *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
