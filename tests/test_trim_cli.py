"""``linerec trim IN OUT``: the trimmed file, its trim map as JSON, and one line of error for bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from numpy.typing import NDArray

from firmware.cli import main
from firmware.dsp.vad import TrimSettings
from firmware.line.speech import SynthVoice

ROOT = Path(__file__).resolve().parent.parent


def conversation(rate: int) -> NDArray[np.int16]:
    """Two remarks 6 s apart, between short quiet stretches, over faint line noise."""
    voice = SynthVoice(seed=8)
    parts = [
        np.zeros(rate // 2),
        voice.say("hello, who is calling please", "callee", rate).astype(np.float64),
        np.zeros(6 * rate),
        voice.say("this is the plumber about your sink", "caller", rate).astype(np.float64),
        np.zeros(rate),
    ]
    audio = np.concatenate(parts) + 10.0 * np.random.default_rng(1).standard_normal(sum(map(len, parts)))
    return np.asarray(np.clip(np.rint(audio), -32768, 32767), dtype=np.int16)


def linerec(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "firmware", *map(str, argv)], capture_output=True, text=True, cwd=ROOT, check=False
    )


def check_report(report: dict[str, Any], out: Path, input_s: float) -> None:
    assert set(report) == {"segments", "input_s", "output_s"}
    assert report["input_s"] == pytest.approx(input_s, abs=0.001)
    segments = report["segments"]
    assert len(segments) == 2  # the 6 s silence is compressed, the rest is kept
    flat = [t for segment in segments for t in segment]
    assert flat == sorted(flat)
    assert flat[0] >= 0.0
    assert flat[-1] <= report["input_s"]
    assert report["output_s"] == pytest.approx(sum(b - a for a, b in segments), abs=0.002)
    assert report["output_s"] < report["input_s"] - 4.0
    info = sf.info(str(out))
    assert info.frames / info.samplerate == pytest.approx(report["output_s"], abs=0.001)


@pytest.mark.parametrize(("name", "subtype"), [("call.wav", "PCM_16"), ("call.flac", "PCM_16")])
def test_trim_writes_the_file_and_prints_its_trim_map(tmp_path: Path, name: str, subtype: str) -> None:
    audio = conversation(8000)
    src, out = tmp_path / name, tmp_path / "trimmed.flac"
    sf.write(src, audio, 8000, subtype=subtype)
    done = linerec("trim", src, out, "--json")
    assert (done.returncode, done.stderr) == (0, "")
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    check_report(json.loads(lines[0]), out, len(audio) / 8000)
    assert sf.info(str(out)).samplerate == 8000


def test_a_44_1_khz_stereo_file_is_trimmed_at_16_khz(tmp_path: Path) -> None:
    audio = conversation(44100)
    src, out = tmp_path / "call.wav", tmp_path / "trimmed.wav"
    sf.write(src, np.stack((audio, audio), axis=1), 44100, subtype="PCM_16")
    done = linerec("trim", src, out, "--json")
    assert done.returncode == 0, done.stderr
    check_report(json.loads(done.stdout), out, len(audio) / 44100)
    assert (sf.info(str(out)).samplerate, sf.info(str(out)).channels) == (16000, 1)


def test_without_cleaning_the_output_is_the_inputs_segments_exactly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    audio = conversation(8000)
    src, out = tmp_path / "call.wav", tmp_path / "trimmed.wav"
    sf.write(src, audio, 8000, subtype="PCM_16")
    assert main(["trim", str(src), str(out), "--json", "--no-clean", "--pad-after-ms", "200"]) == 0
    report = json.loads(capsys.readouterr().out)
    joined = np.concatenate([audio[round(a * 8000) : round(b * 8000)] for a, b in report["segments"]])
    trimmed, _ = sf.read(out, dtype="int16")
    assert np.array_equal(trimmed, joined)


def test_opus_output_is_ogg_opus(tmp_path: Path) -> None:
    src, out = tmp_path / "call.wav", tmp_path / "trimmed.opus"
    sf.write(src, conversation(8000), 8000, subtype="PCM_16")
    done = linerec("trim", src, out)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"kept \d+\.\d{3} s of \d+\.\d{3} s in 2 segments at 8000 Hz\n", done.stdout)
    info = sf.info(str(out))
    assert (info.format, info.subtype, info.samplerate) == ("OGG", "OPUS", 8000)


def test_a_corrupt_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    src = tmp_path / "call.wav"
    src.write_text("this is not audio")
    done = linerec("trim", src, tmp_path / "out.wav")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"linerec: error: cannot read {src} as audio: Format not recognised\n"
    assert not (tmp_path / "out.wav").exists()


def test_a_missing_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    src = tmp_path / "nowhere.wav"
    done = linerec("trim", src, tmp_path / "out.wav")
    assert (done.returncode, done.stderr) == (2, f"linerec: error: cannot read {src}: there is no such file\n")


def test_an_output_extension_trim_cannot_write_is_one_line_and_exit_2(tmp_path: Path) -> None:
    src, out = tmp_path / "call.wav", tmp_path / "out.mp3"
    sf.write(src, conversation(8000), 8000, subtype="PCM_16")
    done = linerec("trim", src, out)
    assert done.returncode == 2
    expected = f"cannot write {out}: trim writes .wav, .flac, .opus or .ogg files, not .mp3"
    assert done.stderr == f"linerec: error: {expected}\n"
    assert not out.exists()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--aggressiveness", "7", "--aggressiveness must be 0, 1, 2 or 3, not 7"),
        ("--frame-ms", "25", "--frame-ms must be 10, 20 or 30 (the frame lengths webrtcvad takes), not 25"),
        ("--min-silence-ms", "lots", "--min-silence-ms takes a whole number, not 'lots'"),
        ("--pad-before-ms", "-5", "--pad-before-ms must be a whole number of milliseconds from 0 to 10000, not -5"),
    ],
)
def test_a_bad_option_value_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, message: str
) -> None:
    src = tmp_path / "call.wav"
    sf.write(src, np.zeros(800, dtype=np.int16), 8000)
    assert main(["trim", str(src), str(tmp_path / "out.wav"), option, value]) == 2
    assert capsys.readouterr().err == f"linerec: error: {message}\n"


def test_the_help_gives_the_defaults_the_settings_have(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["trim", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    defaults = TrimSettings()
    for option in ("aggressiveness", "frame-ms", "pad-before-ms", "pad-after-ms", "min-silence-ms"):
        value = getattr(defaults, option.replace("-", "_"))
        assert re.search(rf"--{option} N [^-]*\(default {value}\)", text), option
