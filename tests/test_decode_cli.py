"""``linerec decode callerid|dtmf|tones FILE``: JSON Lines of what is in the file, one line of error otherwise."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from firmware.cli import main
from firmware.dsp.callerid import encode_mdmf, fsk_callerid_audio
from firmware.dsp.dtmf import generate_dtmf
from firmware.dsp.tones import generate_tone


def write(path: Path, audio: np.ndarray, rate: int = 8000) -> Path:  # type: ignore[type-arg]
    pad = np.zeros(rate // 2)
    sf.write(path, np.concatenate([pad, audio, pad]), rate, subtype="PCM_16")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], list[str]]:
    code = main(["decode", *argv])
    out = capsys.readouterr()
    return code, out.out.splitlines(), out.err.splitlines()


def test_caller_id_is_one_json_line_with_the_documented_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    message = encode_mdmf(
        number=None, name="ACME PLUMBING", number_absent="P", name_absent=None, when=datetime(2026, 11, 29, 9, 30)
    )
    path = write(tmp_path / "cid.wav", fsk_callerid_audio(message, standard="v23", sample_rate=8000))
    code, out, err = run(capsys, "callerid", str(path), "--json")
    assert (code, err, len(out)) == (0, [], 1)
    item = json.loads(out[0])
    documented = {"standard", "number", "name", "time", "number_absence", "name_absence", "checksum_ok"}
    assert {*documented, "start_s", "end_s"} <= set(item)
    assert (item["standard"], item["number"], item["name"], item["time"], item["number_absence"]) == (
        "etsi-v23",
        None,
        "ACME PLUMBING",
        "11290930",
        "private",
    )
    assert item["checksum_ok"] is True
    assert 0.4 < item["start_s"] < item["end_s"]


def test_a_44_1_khz_file_is_resampled_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = encode_mdmf(
        number="2125550142", name=None, number_absent=None, name_absent=None, when=datetime(2026, 1, 2, 3, 4)
    )
    path = write(tmp_path / "cid.flac", fsk_callerid_audio(message, standard="bell202", sample_rate=44100), 44100)
    code, out, _ = run(capsys, "callerid", str(path), "--json", "--standard", "bell202")
    assert code == 0
    assert json.loads(out[0])["number"] == "2125550142"


def test_dtmf_digits_are_json_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "keys.wav", generate_dtmf("159#", 8000))
    code, out, _ = run(capsys, "dtmf", str(path), "--json")
    assert code == 0
    assert [json.loads(line)["digit"] for line in out] == ["1", "5", "9", "#"]
    assert set(json.loads(out[0])) == {"digit", "start_s", "end_s"}


def test_congestion_is_reported_as_reorder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tone = generate_tone("reorder", country="DE", sample_rate=8000, seconds=4.0) / 32768
    path = write(tmp_path / "tone.wav", tone)
    code, out, _ = run(capsys, "tones", str(path), "--country", "de", "--json")
    assert code == 0
    assert [json.loads(line)["tone"] for line in out] == ["reorder"]


def test_nothing_found_is_exit_0_and_no_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "quiet.wav", np.zeros(8000))
    for kind in ("callerid", "dtmf", "tones"):
        assert run(capsys, kind, str(path), "--json") == (0, [], [])


def test_a_human_line_without_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "keys.wav", generate_dtmf("7", 8000))
    code, out, _ = run(capsys, "dtmf", str(path))
    assert code == 0
    assert len(out) == 1
    assert "digit=7" in out[0]


def test_an_unreadable_file_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not audio")
    code, out, err = run(capsys, "callerid", str(path))
    assert (code, out, len(err)) == (1, [], 1)
    assert err[0].startswith(f"linerec: error: cannot read {path} as audio: ")


def test_an_unknown_country_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "quiet.wav", np.zeros(800))
    code, _, err = run(capsys, "tones", str(path), "--country", "XX")
    assert code == 1
    known = "AU, CA, DE, FR, GB, NL, US, default"
    assert err == [f"linerec: error: no call-progress tones are known for country 'XX'; known: {known}"]
