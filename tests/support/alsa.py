"""Sound devices without a sound card: PortAudio through ALSA's ``file`` plugin.

``fcap`` reads samples from a raw file and ``fplay`` writes what is played to
another, exactly and without real-time pacing. PortAudio lists devices when
sounddevice is imported, so a test runs its audio code in a child process whose
``ALSA_CONFIG_PATH`` names the config made here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def file_devices(folder: Path, rate: int = 8000) -> dict[str, str]:
    """Write an ALSA config with fcap/fplay/fduplex devices in ``folder``; the child's environment."""
    conf = folder / "asound.conf"
    infile, outfile = folder / "in.raw", folder / "out.raw"
    infile.touch()
    conf.write_text(
        f'pcm.fcap_raw {{ type file; slave.pcm "null"; file "/dev/null"; infile "{infile}"; format "raw" }}\n'
        f'pcm.fcap {{ type plug; slave {{ pcm "fcap_raw"; format S16_LE; rate {rate}; channels 1 }} }}\n'
        f'pcm.fplay_raw {{ type file; slave.pcm "null"; file "{outfile}"; format "raw" }}\n'
        f'pcm.fplay {{ type plug; slave {{ pcm "fplay_raw"; format S16_LE; rate {rate}; channels 1 }} }}\n'
        'pcm.fduplex { type asym; playback.pcm "fplay"; capture.pcm "fcap" }\n'
    )
    return {**os.environ, "ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{conf}", "PYTHONPATH": str(ROOT)}


def run_child(code: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` in a child that sees the file devices."""
    argv = [sys.executable, "-c", code]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
