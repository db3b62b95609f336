"""Export: which audio of a call, snippets to the sample, WAV/FLAC/Ogg Opus or stdout, and evidence facts.

The recordings are real: a device's recorder writes them (one a segment log
left by a crash) and the agent's ingest archives them.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray

from agent.archive import Archive, CallRow
from agent.config import AgentConfig, parse
from agent.envelope import SEALED, read_header
from agent.errors import AgentError
from agent.export import CHOICES, FORMATS, add_export_parser, cmd_export, export, parse_time, source_of
from firmware.wire import age
from firmware.wire.errors import LinerecError
from tests.support.device_calls import PLAIN, RATE, T0, Device, deliver, identity_file, noise, ramp

FORMAT_LIST = tuple(FORMATS)


def tone_bursts() -> NDArray[np.int16]:
    """Speech-band noise, 9 s of silence, noise again: the device's VAD trims the middle."""
    return np.concatenate([noise(3 * RATE, 5), np.zeros(9 * RATE, np.int16), noise(3 * RATE, 6)])


@dataclass
class Calls:
    """An archive with one call of each kind, and the samples each was recorded from."""

    root: Path
    identity: str
    cfg: AgentConfig
    archive: Archive
    kept: CallRow  # trimmed recording plus the untrimmed original
    plain: CallRow  # untrimmed, unfiltered, no original: the recording is the ramp exactly
    crashed: CallRow  # a segment log recovered after a crash
    opus: CallRow  # recorded as Ogg Opus
    missed: CallRow  # never answered
    captured: dict[str, NDArray[np.int16]]

    @property
    def keys(self) -> list[age.Identity]:
        return [age.parse_identity(self.identity)]


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Calls]:
    root = tmp_path_factory.mktemp("export")
    identity = identity_file(root / "identity.txt")
    recipients = (age.recipient_of(identity),)
    device = Device.make(root, recipients, keep_original=True, preroll_s=0.0)
    captured = {"kept": tone_bursts(), "plain": ramp(20 * RATE), "crashed": ramp(5 * RATE, 777), "opus": ramp(RATE)}
    ids = {
        "kept": device.record(captured["kept"], t0=T0),
        "plain": device.with_audio(**PLAIN).record(captured["plain"], t0=T0 + 100),
        "crashed": device.with_audio(**PLAIN).crash(captured["crashed"], t0=T0 + 200),
        "opus": device.with_audio(**PLAIN, codec="opus").record(captured["opus"], t0=T0 + 300),
    }
    missed = _record_missed(device)
    cfg = parse({"agent": {"identity": str(root / "identity.txt"), "archive_dir": str(root / "archive")}})
    with Archive(root / "archive") as archive:
        deliver(device, archive, [age.parse_identity(identity)])
        rows = {name: archive.get(rec_id) for name, rec_id in ids.items()}
        yield Calls(root, identity, cfg, archive, missed=archive.get(missed), captured=captured, **rows)


def _record_missed(device: Device) -> str:
    from firmware.calls import Call, CallState, HangupCause  # noqa: PLC0415
    from firmware.recorder import CallRecorder  # noqa: PLC0415

    recorder = CallRecorder(config=device.config, spool=device.spool, signing_key=device.key, sample_rate=RATE)
    return recorder.finish(
        Call(
            CallState.ENDED,
            ring_count=3,
            first_ring_at=T0 + 400,
            ended_at=T0 + 420,
            hangup_cause=HangupCause.UNANSWERED,
        )
    )


def decrypted(path: str | Path, keys: list[age.Identity]) -> bytes:
    return age.decrypt_bytes(Path(path).read_bytes(), keys)


def samples_of(data: bytes) -> NDArray[np.int16]:
    samples: NDArray[np.int16] = sf.read(io.BytesIO(data), dtype="int16")[0]
    return samples


def run(calls: Calls, *argv: str, actor: str = "tester") -> int:
    parser = argparse.ArgumentParser(prog="linerec-agent")
    add_export_parser(parser.add_subparsers(dest="command", required=True))
    return cmd_export(calls.cfg, parser.parse_args(["export", *argv]), actor=actor)


# --- times ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("75", 75.0), ("75.5", 75.5), ("1:15", 75.0), ("01:15.25", 75.25), ("0:01:15", 75.0), ("2:00:00", 7200.0),
     ("90:00", 5400.0), (" 3 ", 3.0), ("0", 0.0)],
)  # fmt: skip
def test_times_are_read_as_seconds_minutes_and_hours(text: str, seconds: float) -> None:
    assert parse_time(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-5", "--start '-5' is not a time: use SS, SS.s, MM:SS or HH:MM:SS, e.g. 75, 75.5, 1:15 or 0:01:15"),
        ("", "--start '' is not a time: use SS, SS.s, MM:SS or HH:MM:SS, e.g. 75, 75.5, 1:15 or 0:01:15"),
        ("1:2:3:4", "--start '1:2:3:4' is not a time: use SS, SS.s, MM:SS or HH:MM:SS, e.g. 75, 75.5, 1:15 or 0:01:15"),
        ("1e3", "--start '1e3' is not a time: use SS, SS.s, MM:SS or HH:MM:SS, e.g. 75, 75.5, 1:15 or 0:01:15"),
        ("1.5:00", "--start '1.5:00' is not a time: use SS, SS.s, MM:SS or HH:MM:SS, e.g. 75, 75.5, 1:15 or 0:01:15"),
        ("nan", "--start 'nan' is not a time: use SS, SS.s, MM:SS or HH:MM:SS, e.g. 75, 75.5, 1:15 or 0:01:15"),
        ("1:60", "--start '1:60' has 60 in the seconds field; it must be below 60"),
        ("1:60:00", "--start '1:60:00' has 60 in the minutes field; it must be below 60"),
    ],
)
def test_a_time_that_is_not_one_is_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(AgentError) as info:
        parse_time(text, "--start")
    assert str(info.value) == message


@given(st.integers(0, 99), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999))
def test_every_spelling_of_a_time_gives_the_same_seconds(h: int, m: int, s: int, ms: int) -> None:
    seconds = h * 3600 + m * 60 + s + ms / 1000
    assert parse_time(f"{h}:{m:02d}:{s:02d}.{ms:03d}") == pytest.approx(seconds)
    assert parse_time(f"{h * 60 + m}:{s:02d}.{ms:03d}") == pytest.approx(seconds)
    assert parse_time(f"{h * 3600 + m * 60 + s}.{ms:03d}") == pytest.approx(seconds)


# --- which audio, which format ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMAT_LIST)
@pytest.mark.parametrize("choice", CHOICES)
def test_each_choice_in_each_format_is_the_audio_it_names(calls: Calls, choice: str, fmt: str, tmp_path: Path) -> None:
    for row, has_original in ((calls.kept, True), (calls.plain, False)):
        if choice == "original" and not has_original:
            continue
        out = tmp_path / f"{row.id}.{fmt}"
        source, audio = source_of(row, choice)
        done = export(source, out, calls.keys, start=None, end=None)
        expected_audio = "original" if has_original and choice != "trimmed" else "trimmed"
        assert audio == expected_audio
        assert str(source) == (row.original_path if expected_audio == "original" else row.path)
        expected = samples_of(decrypted(source, calls.keys))
        got, rate = sf.read(out, dtype="int16")
        assert (rate, len(got), done.end_frame, done.total_frames) == (RATE, *[len(expected)] * 3)
        assert done.byte_copy == (fmt == "flac")
        if fmt == "opus":
            assert sf.info(str(out)).format == "OGG"
            assert sf.info(str(out)).subtype == "OPUS"
        else:
            assert np.array_equal(got, expected)
    original = samples_of(decrypted(calls.kept.original_path or "", calls.keys))
    assert np.array_equal(original, calls.captured["kept"])
    trimmed = samples_of(decrypted(calls.kept.path, calls.keys))
    assert len(trimmed) < len(original) - 5 * RATE, "the silence in the middle was trimmed"


def test_the_whole_recording_in_its_own_format_is_a_byte_for_byte_copy(calls: Calls, tmp_path: Path) -> None:
    for row, name in ((calls.kept, "a.flac"), (calls.opus, "b.opus")):
        done = export(Path(row.path), tmp_path / name, calls.keys)
        assert done.byte_copy
        assert (tmp_path / name).read_bytes() == decrypted(row.path, calls.keys)
        assert done.sha256 == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
    done = export(Path(calls.kept.original_path or ""), tmp_path / "o.flac", calls.keys)
    assert done.byte_copy
    assert (tmp_path / "o.flac").read_bytes() == decrypted(calls.kept.original_path or "", calls.keys)
    snippet = export(Path(calls.kept.path), tmp_path / "s.flac", calls.keys, start=0.5)
    assert not snippet.byte_copy


def test_opus_decodes_back_with_the_duration_of_the_audio(calls: Calls, tmp_path: Path) -> None:
    export(Path(calls.plain.path), tmp_path / "whole.opus", calls.keys)
    info = sf.info(str(tmp_path / "whole.opus"))
    assert (info.samplerate, info.frames) == (RATE, 20 * RATE)
    export(Path(calls.opus.path), tmp_path / "o.wav", calls.keys, start=0.25, end=0.75)
    assert sf.info(str(tmp_path / "o.wav")).frames == RATE // 2


# --- snippets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_a_snippet_holds_exactly_the_samples_from_start_up_to_end(calls: Calls, fmt: str, tmp_path: Path) -> None:
    ramp_ = calls.captured["plain"]
    for start, end in ((1.5, 3.25), (0, 0.001), (8.191, 8.192 + 1 / RATE), (19.5, 20.0), (0.0, None), (12.0, None)):
        out = tmp_path / f"s.{fmt}"
        done = export(Path(calls.plain.path), out, calls.keys, start=start, end=end)
        got, _ = sf.read(out, dtype="int16")
        first, last = round(start * RATE), round(end * RATE) if end is not None else len(ramp_)
        assert (done.start_frame, done.end_frame) == (first, last)
        assert np.array_equal(got, ramp_[first:last])
        assert got[0] == ramp_[first]
        assert got[-1] == ramp_[last - 1]


def test_a_snippet_of_a_recovered_call_crosses_its_segments_exactly(calls: Calls, tmp_path: Path) -> None:
    captured = calls.captured["crashed"]
    assert calls.crashed.path.endswith(".flac.segments")
    export(Path(calls.crashed.path), tmp_path / "all.wav", calls.keys)
    recovered = samples_of((tmp_path / "all.wav").read_bytes())
    assert len(recovered) >= 4 * RATE
    assert np.array_equal(recovered, captured[: len(recovered)])
    for start, end in ((0.9, 2.1), (2.0, 3.0), (0.0, 0.5), (3.999, 4.0)):
        got = samples_of_export(calls, Path(calls.crashed.path), tmp_path / "s.flac", start=start, end=end)
        assert np.array_equal(got, captured[round(start * RATE) : round(end * RATE)])


def cut_after_chunks(path: Path, chunks: int) -> bytes:
    """The age file at ``path`` cut right after its first ``chunks`` payload chunks: no final chunk."""
    data = path.read_bytes()
    with path.open("rb") as f:
        start = read_header(f).length + 16
    assert len(data) > start + chunks * SEALED, "the file has more chunks than are kept"
    return data[: start + chunks * SEALED]


def samples_of_export(calls: Calls, source: Path, out: Path, *, start: float, end: float) -> NDArray[np.int16]:
    export(source, out, calls.keys, start=start, end=end)
    return samples_of(out.read_bytes())


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (3.0, 3.0, "snippet start 3.000 s is not before its end 3.000 s"),
        (5.0, 2.0, "snippet start 5.000 s is not before its end 2.000 s"),
        (-1.0, None, "snippet start -1.0 s is negative; times count from 0 at the start of the recording"),
        (None, -2.0, "snippet end -2.0 s is negative; times count from 0 at the start of the recording"),
        (20.0, None, "snippet start 20.000 s is past the end of the recording: it is 20.000 s long"),
        (25.0, 30.0, "snippet start 25.000 s is past the end of the recording: it is 20.000 s long"),
        (
            1.0,
            20.5,
            "snippet end 20.500 s is past the end of the recording: it is 20.000 s long;"
            " leave the end out to export to it",
        ),
        (1.0, 1.00001, "snippet 1.000000-1.000010 s is shorter than one sample at 8000 Hz"),
    ],
)
def test_a_snippet_that_cannot_be_cut_is_refused_with_one_line_and_no_file(
    calls: Calls, start: float | None, end: float | None, message: str, tmp_path: Path
) -> None:
    with pytest.raises(AgentError) as info:
        export(Path(calls.plain.path), tmp_path / "x.wav", calls.keys, start=start, end=end)
    assert str(info.value) == message
    assert list(tmp_path.iterdir()) == []


def test_the_original_of_a_call_that_kept_none_is_refused(calls: Calls) -> None:
    with pytest.raises(AgentError) as info:
        source_of(calls.plain, "original")
    assert str(info.value) == (
        f"call {calls.plain.id} has no untrimmed original: its device did not keep one (audio.keep_original)"
    )
    assert source_of(calls.plain, "full") == (Path(calls.plain.path), "trimmed")
    assert source_of(calls.crashed, "full") == (Path(calls.crashed.path), "trimmed")
    with pytest.raises(AgentError, match=r"^call .* was not answered, so it has no audio to export$"):
        source_of(calls.missed, "trimmed")
    with pytest.raises(AgentError, match=r"^audio 'both' is not one of trimmed, original, full$"):
        source_of(calls.kept, "both")


@pytest.mark.parametrize(
    ("target", "fmt", "message"),
    [
        ("x.mp3", None, "output {dir}/x.mp3 must end in .wav, .flac or .opus"),
        ("x", None, "output {dir}/x must end in .wav, .flac or .opus"),
        ("x.wav", "flac", "output {dir}/x.wav ends in .wav but the format asked for is flac"),
        ("-", None, "output to stdout (-) needs --format wav, flac or opus"),
        ("-", "mp3", "format 'mp3' is not one of wav, flac, opus"),
        ("missing/x.wav", None, "cannot write {dir}/missing/x.wav: the folder {dir}/missing does not exist"),
    ],
)
def test_an_output_that_cannot_be_written_is_one_clear_error(
    calls: Calls, target: str, fmt: str | None, message: str, tmp_path: Path
) -> None:
    out: Path | str = target if target == "-" else tmp_path / target
    with pytest.raises(AgentError) as info:
        export(Path(calls.plain.path), out, calls.keys, fmt=fmt, stdout=io.BytesIO())
    assert str(info.value) == message.format(dir=tmp_path)


def test_damaged_or_foreign_recordings_are_refused_and_leave_no_output(calls: Calls, tmp_path: Path) -> None:
    other = [age.parse_identity(age.generate_identity())]
    with pytest.raises(AgentError, match=r"^cannot decrypt .*\.flac\.age: no identity matches any recipient"):
        export(Path(calls.plain.path), tmp_path / "x.wav", other)
    with pytest.raises(AgentError, match=r"^cannot decrypt .*\.flac\.segments: segment 0 of the log cannot be"):
        export(Path(calls.crashed.path), tmp_path / "x.wav", other)
    data = bytearray(Path(calls.plain.path).read_bytes())
    flipped = tmp_path / "flipped.flac.age"
    data[len(data) // 2] ^= 1
    flipped.write_bytes(bytes(data))
    with pytest.raises(AgentError, match=r"^cannot decrypt flipped\.flac\.age: bad age payload: chunk \d+ fails"):
        export(flipped, tmp_path / "x.wav", calls.keys)
    with pytest.raises(AgentError, match=r"^cannot decrypt flipped\.flac\.age: bad age payload: chunk \d+ fails"):
        export(flipped, tmp_path / "x.flac", calls.keys)
    cut = tmp_path / "cut.flac.age"
    cut.write_bytes(cut_after_chunks(Path(calls.kept.original_path or ""), 1))
    with pytest.raises(AgentError, match=r"^cannot decrypt cut\.flac\.age: bad age payload: the file ends without a"):
        export(cut, tmp_path / "x.wav", calls.keys)
    cut.write_bytes(Path(calls.kept.original_path or "").read_bytes()[:-1000])
    with pytest.raises(AgentError, match=r"^cannot decrypt cut\.flac\.age: bad age payload: chunk \d+ fails"):
        export(cut, tmp_path / "x.wav", calls.keys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.flac.age", "flipped.flac.age"]
    with pytest.raises(AgentError, match=r"^recording file .*nothing\.flac\.age is missing from the archive$"):
        export(tmp_path / "nothing.flac.age", tmp_path / "x.wav", calls.keys)


def test_a_call_trimmed_away_entirely_has_no_audio_to_export(tmp_path: Path) -> None:
    identity = identity_file(tmp_path / "identity.txt")
    device = Device.make(tmp_path, (age.recipient_of(identity),), preroll_s=0.0)
    rec_id = device.record(np.zeros(3 * RATE, np.int16))  # silence: the VAD keeps nothing
    keys = [age.parse_identity(identity)]
    with Archive(tmp_path / "archive") as archive:
        deliver(device, archive, keys)
        row = archive.get(rec_id)
    for out in ("x.flac", "x.wav"):
        with pytest.raises(AgentError) as info:
            export(Path(row.path), tmp_path / out, keys)
        assert str(info.value) == f"recording {Path(row.path).name} holds no audio"
        assert not (tmp_path / out).exists()


# --- stdout, the command, and evidence --------------------------------------------------------------


def test_export_to_stdout_writes_the_audio_and_nothing_else(calls: Calls, tmp_path: Path) -> None:
    sink = io.BytesIO()
    done = export(Path(calls.plain.path), "-", calls.keys, start=2, end=4, fmt="wav", stdout=sink)
    got, rate = sf.read(io.BytesIO(sink.getvalue()), dtype="int16")
    assert rate == RATE
    assert np.array_equal(got, calls.captured["plain"][2 * RATE : 4 * RATE])
    assert done.sha256 == hashlib.sha256(sink.getvalue()).hexdigest()
    sink = io.BytesIO()
    export(Path(calls.kept.path), "-", calls.keys, fmt="flac", stdout=sink)
    assert sink.getvalue() == decrypted(calls.kept.path, calls.keys)
    assert list(tmp_path.iterdir()) == []


def test_the_export_command_cuts_by_clock_times_and_writes_to_stdout(
    calls: Calls, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert run(calls, calls.plain.id, "-", "--format", "flac", "--start", "0:01.5", "--end", "0:00:03.25") == 0
    captured = capsysbinary.readouterr()
    got, _ = sf.read(io.BytesIO(captured.out), dtype="int16")
    assert np.array_equal(got, calls.captured["plain"][12000:26000])
    assert captured.err.decode() == f"exported {calls.plain.id} (trimmed, 1.500-3.250 s) to stdout\n"


def test_the_export_command_refuses_bad_times_and_a_sidecar_it_cannot_place(calls: Calls, tmp_path: Path) -> None:
    with pytest.raises(LinerecError, match=r"^--end '3:75' has 75 in the seconds field; it must be below 60$"):
        run(calls, calls.plain.id, str(tmp_path / "x.wav"), "--end", "3:75")
    with pytest.raises(LinerecError, match=r"^--with-facts with output to stdout needs --facts-out FILE"):
        run(calls, calls.plain.id, "-", "--format", "wav", "--with-facts")
    with pytest.raises(LinerecError, match=r"^call .* has no untrimmed original"):
        run(calls, calls.plain.id, str(tmp_path / "x.wav"), "--original")
    with pytest.raises(LinerecError, match=r"^recording '20200101T000000000Z-00000000' is not in the archive"):
        run(calls, "20200101T000000000Z-00000000", str(tmp_path / "x.wav"))
    assert list(tmp_path.iterdir()) == []


def test_facts_tie_an_exported_clip_to_its_call_and_signed_manifest(
    calls: Calls, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "clip.wav"
    assert run(calls, calls.kept.id, str(out), "--audio", "full", "--start", "1", "--end", "2.5", "--with-facts") == 0
    assert capsys.readouterr().out == f"exported {calls.kept.id} (original, 1.000-2.500 s) to {out}\n"
    facts = json.loads((tmp_path / "clip.wav.json").read_text())
    original = Path(calls.kept.original_path or "")
    assert facts["format"] == "linerec-export-facts/1"
    assert (facts["recording_id"], facts["device"], facts["audio"], facts["asked_for"]) == (
        calls.kept.id,
        "pi-test",
        "original",
        "full",
    )
    assert facts["archived"]["file"] == original.name
    assert facts["archived"]["sha256"] == hashlib.sha256(original.read_bytes()).hexdigest()
    assert facts["archived"]["verified"] is True
    assert facts["archived"]["problems"] == []
    assert facts["exported"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert facts["exported"]["bytes"] == out.stat().st_size
    assert facts["snippet"] == {
        "start_s": 1.0,
        "end_s": 2.5,
        "start_frame": 8000,
        "end_frame": 20000,
        "of_frames": len(calls.captured["kept"]),
        "of_s": len(calls.captured["kept"]) / RATE,
    }
    assert facts["exported_by"] == "tester"
    assert facts["started_at"] == calls.kept.started_at
    assert (tmp_path / "clip.wav.json").stat().st_mode & 0o777 == 0o600


def test_memory_stays_flat_however_long_the_call(tmp_path: Path) -> None:
    identity = identity_file(tmp_path / "identity.txt")
    device = Device.make(tmp_path, (age.recipient_of(identity),), **PLAIN)
    samples = ramp(300 * RATE)  # five minutes: 4.8 MB of samples
    rec_id = device.record(samples)
    device.with_audio(**PLAIN).crash(samples[: 120 * RATE], t0=T0 + 1000)
    keys = [age.parse_identity(identity)]
    with Archive(tmp_path / "archive") as archive:
        stored = deliver(device, archive, keys)
        rows = [archive.get(rec_id), archive.get(next(i for i in stored if i != rec_id))]
    for row in rows:
        for name, start, end in (("whole.wav", None, None), ("cut.flac", 30.0, 90.0), ("whole.opus", None, None)):
            tracemalloc.start()
            export(Path(row.path), tmp_path / name, keys, start=start, end=end)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert peak < 1_000_000, f"{name} of {Path(row.path).name} held {peak} bytes at once"
    assert np.array_equal(sf.read(tmp_path / "cut.flac", dtype="int16")[0], samples[30 * RATE : 90 * RATE])
