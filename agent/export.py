"""Turn an archived recording, or a snippet of it, back into audio a person can play.

An archived recording is one age file holding FLAC, Opus or WAV (its name says
which: ``<id>.flac.age``), or, for a call the device recovered after a crash, a
segment log (``<id>.flac.segments``) of small FLAC files each in its own age
file. Which audio of a call (:data:`CHOICES`):

* ``trimmed``: the recording the device sent, silences cut by its VAD (the
  manifest's trim map says what was kept). A call recovered after a crash was
  never trimmed: its recording is the whole call as captured.
* ``original``: the untrimmed, unfiltered original, as captured; only when the
  device kept one (``audio.keep_original``), an error otherwise.
* ``full``: the whole call as far as the archive has it: the original when the
  device kept one, else the recording.

A snippet (``start``, ``end`` in seconds) is on the chosen audio's own timeline:
frames ``round(start * rate)`` up to, not including, ``round(end * rate)``. An
end past the end of the audio is refused rather than clipped, so a clip never
silently covers less than was asked for.

The output's format is its suffix (``.wav``, ``.flac``, ``.opus`` for Ogg Opus),
or ``fmt`` when writing to a stream. The whole recording exported in its own
format is a byte-for-byte copy of the decrypted file; everything else is
decoded and written again, a block at a time: nothing holds the whole call in
memory, and no plaintext is written anywhere but the output.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.envelope import file_sha256
from agent.errors import AgentError
from agent.samples import SampleReader, cannot_decrypt, open_samples
from firmware.wire import age
from firmware.wire.errors import AgeError

if TYPE_CHECKING:
    from agent.archive import CallRow
    from agent.cli_common import Context
    from agent.config import AgentConfig

CHOICES = ("trimmed", "original", "full")
# format name -> libsndfile (format, subtype, sample rates it takes or None for any)
FORMATS: dict[str, tuple[str, str, tuple[int, ...] | None]] = {
    "wav": ("WAV", "PCM_16", None),
    "flac": ("FLAC", "PCM_16", None),
    "opus": ("OGG", "OPUS", (8000, 12000, 16000, 24000, 48000)),
}
# libsndfile maps its 0..1 compression level onto 256..6 kb/s: 0.928 is 24 kb/s, clear speech.
OPUS_COMPRESSION = 0.928
_TIME = re.compile(r"^(?:(?:(\d+):)?(\d+):)?(\d+(?:\.\d+)?)$")


def parse_time(text: str, what: str = "time") -> float:
    """Seconds from ``SS``, ``SS.s``, ``MM:SS`` or ``HH:MM:SS`` (the last field may have a fraction)."""
    match = _TIME.fullmatch(text.strip())
    if match is None:
        msg = f"{what} {text!r} is not a time: use SS, SS.s, MM:SS or HH:MM:SS, e.g. 75, 75.5, 1:15 or 0:01:15"
        raise AgentError(msg)
    hours, minutes, seconds = match.groups()
    if minutes is not None and float(seconds) >= 60:
        msg = f"{what} {text!r} has {seconds} in the seconds field; it must be below 60"
        raise AgentError(msg)
    if hours is not None and int(minutes) >= 60:
        msg = f"{what} {text!r} has {minutes} in the minutes field; it must be below 60"
        raise AgentError(msg)
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds)


def format_for(target: Path | str, fmt: str | None) -> str:
    """The output format: ``fmt`` if given (it must then agree with the suffix), else the suffix's."""
    if str(target) == "-":
        if fmt is None:
            msg = "output to stdout (-) needs --format wav, flac or opus"
            raise AgentError(msg)
    else:
        suffix = Path(target).suffix.lower().lstrip(".")
        if suffix not in FORMATS:
            msg = f"output {target} must end in .wav, .flac or .opus"
            raise AgentError(msg)
        if fmt is not None and fmt != suffix:
            msg = f"output {target} ends in .{suffix} but the format asked for is {fmt}"
            raise AgentError(msg)
        fmt = suffix
    if fmt not in FORMATS:
        msg = f"format {fmt!r} is not one of {', '.join(FORMATS)}"
        raise AgentError(msg)
    return fmt


@dataclass(frozen=True, slots=True)
class Exported:
    """What an export wrote."""

    source: Path
    format: str
    sample_rate: int | None  # None: a byte copy whose audio header libsndfile cannot read
    total_frames: int | None  # of the whole recording exported from
    start_frame: int
    end_frame: int | None
    sha256: str  # of the bytes written
    size: int
    byte_copy: bool  # the decrypted archive file itself, unchanged


def source_of(row: CallRow, choice: str) -> tuple[Path, str]:
    """The archive file for ``choice`` and which audio it is (``trimmed`` or ``original``)."""
    if choice not in CHOICES:
        msg = f"audio {choice!r} is not one of {', '.join(CHOICES)}"
        raise AgentError(msg)
    if not row.answered or row.duration_s == 0:
        msg = f"call {row.id} was not answered, so it has no audio to export"
        raise AgentError(msg)
    if choice == "original" and row.original_path is None:
        msg = f"call {row.id} has no untrimmed original: its device did not keep one (audio.keep_original)"
        raise AgentError(msg)
    if choice != "trimmed" and row.original_path is not None:
        return Path(row.original_path), "original"
    return Path(row.path), "trimmed"


def export(
    source: Path,
    target: Path | str,
    identities: Sequence[age.Identity],
    *,
    start: float | None = None,
    end: float | None = None,
    fmt: str | None = None,
    stdout: BinaryIO | None = None,
) -> Exported:
    """Write the archived recording at ``source`` (or the snippet ``start``-``end``) to ``target``.

    ``target`` ``"-"`` writes to ``stdout`` (``fmt`` required). A file target
    appears only when complete: it is written under a temporary name beside
    itself and renamed at the end.
    """
    fmt = format_for(target, fmt)
    if not source.is_file():
        msg = f"recording file {source} is missing from the archive"
        raise AgentError(msg)
    for name, value in (("start", start), ("end", end)):
        if value is not None and not value >= 0:
            msg = f"snippet {name} {value} s is negative; times count from 0 at the start of the recording"
            raise AgentError(msg)
    if start is not None and end is not None and start >= end:
        msg = f"snippet start {start:.3f} s is not before its end {end:.3f} s"
        raise AgentError(msg)
    if not start and end is None and _codec_of(source) == fmt:
        return _byte_copy(source, target, identities, fmt, stdout)
    with open_samples(source, identities) as reader:
        first, last = _frames(reader, source, start, end)
        with _Output(target, stdout) as out:
            _encode(out, fmt, reader, first, last)
            digest, size = out.finish()
    return Exported(source, fmt, reader.rate, reader.frames, first, last, digest, size, byte_copy=False)


def _codec_of(source: Path) -> str:
    """The format of an archived age file by its name (``<id>.flac.age``); "" for a segment log."""
    if not source.name.endswith(".age"):
        return ""
    return source.name.removesuffix(".age").rsplit(".", 1)[-1]


def _byte_copy(
    source: Path, target: Path | str, identities: Sequence[age.Identity], fmt: str, stdout: BinaryIO | None
) -> Exported:
    """The decrypted file as it is; its rate and length read from its header when libsndfile can."""
    import soundfile as sf  # noqa: PLC0415  (numpy stays out of the agent until audio is needed)

    with _Output(target, stdout) as out:
        _copy_plaintext(source, identities, out.file)
        if not out.file.tell():
            msg = f"recording {source.name} holds no audio"
            raise AgentError(msg)
        out.file.seek(0)
        rate: int | None = None
        frames: int | None = None
        with contextlib.suppress(sf.LibsndfileError, RuntimeError):
            info = sf.info(out.file)
            rate, frames = int(info.samplerate), int(info.frames)
        digest, size = out.finish()
    return Exported(source, fmt, rate, frames, 0, frames, digest, size, byte_copy=True)


def _frames(reader: SampleReader, source: Path, start: float | None, end: float | None) -> tuple[int, int]:
    rate, total = reader.rate, reader.frames
    if total == 0:
        msg = f"recording {source.name} holds no audio"
        raise AgentError(msg)
    length = f"it is {total / rate:.3f} s long"
    first = round(start * rate) if start is not None else 0
    last = round(end * rate) if end is not None else total
    if first >= total:
        msg = f"snippet start {start:.3f} s is past the end of the recording: {length}"
        raise AgentError(msg)
    if last > total:
        msg = f"snippet end {end:.3f} s is past the end of the recording: {length}; leave the end out to export to it"
        raise AgentError(msg)
    if last <= first:
        msg = f"snippet {start:.6f}-{end:.6f} s is shorter than one sample at {rate} Hz"
        raise AgentError(msg)
    return first, last


class _Output:
    """Where the export goes: a temporary file renamed into place, or a stream."""

    def __init__(self, target: Path | str, stdout: BinaryIO | None) -> None:
        self._stream = stdout if str(target) == "-" else None
        if str(target) == "-" and stdout is None:
            msg = "output to stdout (-) needs a stream to write to"
            raise AgentError(msg)
        self.target = Path(target)
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        if self._stream is not None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="linerec-export-")
            self.path = Path(self._tmpdir.name) / "out"
        else:
            if not self.target.parent.is_dir():
                msg = f"cannot write {self.target}: the folder {self.target.parent} does not exist"
                raise AgentError(msg)
            self.path = self.target.with_name(f".{self.target.name}.partial")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as exc:
            msg = f"cannot write {self.target}: {exc.strerror}"
            raise AgentError(msg) from None
        self.file = os.fdopen(fd, "w+b")
        self._done = False

    def __enter__(self) -> _Output:
        return self

    def finish(self) -> tuple[str, int]:
        """Hash what was written and put it in place; the SHA-256 and size."""
        digest, size = hashlib.sha256(), 0
        try:
            self.file.flush()
            self.file.seek(0)
            while block := self.file.read(1 << 16):
                digest.update(block)
                size += len(block)
                if self._stream is not None:
                    self._stream.write(block)
            if self._stream is not None:
                self._stream.flush()
            else:
                os.fsync(self.file.fileno())
                self.path.replace(self.target)
        except OSError as exc:
            if isinstance(exc, BrokenPipeError):
                raise
            msg = f"cannot write {self.target}: {exc.strerror or exc}"
            raise AgentError(msg) from None
        self._done = True
        return digest.hexdigest(), size

    def __exit__(self, *_: object) -> None:
        self.file.close()
        if not self._done:
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)
        if self._tmpdir is not None:
            self._tmpdir.cleanup()


def _copy_plaintext(source: Path, identities: Sequence[age.Identity], out: BinaryIO) -> None:
    try:
        with source.open("rb") as src:
            for piece in age.Decryptor(src, identities).chunks():
                out.write(piece)
    except AgeError as exc:
        raise cannot_decrypt(source, exc) from None


def _encode(out: _Output, fmt: str, reader: SampleReader, first: int, last: int) -> None:
    import soundfile as sf  # noqa: PLC0415

    file_format, subtype, rates = FORMATS[fmt]
    if rates is not None and reader.rate not in rates:
        msg = f"Opus takes {', '.join(map(str, rates))} Hz audio; this recording is at {reader.rate} Hz"
        raise AgentError(msg)
    options = {"compression_level": OPUS_COMPRESSION} if fmt == "opus" else {}
    try:
        with sf.SoundFile(
            out.file, "w", samplerate=reader.rate, channels=1, subtype=subtype, format=file_format, **options
        ) as audio:
            for block in reader.blocks(first, last):
                audio.write(block)
    except (OSError, sf.LibsndfileError, RuntimeError) as exc:
        msg = f"cannot write {out.target}: {exc}"
        raise AgentError(msg) from None


# --- evidence and the command line -------------------------------------------------------

FACTS_FORMAT = "linerec-export-facts/1"


def export_facts(
    row: CallRow,
    exported: Exported,
    *,
    audio: str,
    choice: str,
    problems: list[str],
    output: str,
    actor: str,
    at: str,
) -> dict[str, Any]:
    """The sidecar that ties an exported file to its call and its signed manifest.

    ``problems`` is what :func:`agent.rewrap.verify_call` found with the call
    (empty: the manifest's signature verifies against the device's pinned key and
    the archived file is the one it signs, directly or through a payload record).
    """
    rate = exported.sample_rate

    def seconds(frames: int | None) -> float | None:
        return round(frames / rate, 6) if rate and frames is not None else None

    return {
        "format": FACTS_FORMAT,
        "recording_id": row.id,
        "device": row.device,
        "line": row.line,
        "started_at": row.started_at,
        "answered_at": row.answered_at,
        "ended_at": row.ended_at,
        "caller": {"number": row.caller_number, "name": row.caller_name, "absent": row.caller_absent},
        "audio": audio,
        "asked_for": choice,
        "archived": {
            "file": exported.source.name,
            "sha256": file_sha256(exported.source),
            "index_sha256": row.sha256,
            "verified": not problems,
            "problems": problems,
        },
        "exported": {
            "file": output,
            "format": exported.format,
            "sha256": exported.sha256,
            "bytes": exported.size,
            "sample_rate": rate,
            "byte_copy": exported.byte_copy,
        },
        "snippet": {
            "start_s": seconds(exported.start_frame),
            "end_s": seconds(exported.end_frame),
            "start_frame": exported.start_frame,
            "end_frame": exported.end_frame,
            "of_frames": exported.total_frames,
            "of_s": seconds(exported.total_frames),
        },
        "exported_at": at,
        "exported_by": actor,
    }


def add_export_parser(sub: Any) -> None:
    """Add ``export`` to the agent's subcommands."""
    parser = sub.add_parser(
        "export",
        help="decrypt a recording, or a snippet of it, to WAV, FLAC or Ogg Opus",
        description=EXPORT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recording_id")
    parser.add_argument("out", help="output file (.wav, .flac or .opus), or - for stdout (with --format)")
    parser.add_argument("--audio", choices=CHOICES, default="trimmed", help="which audio of the call (see above)")
    parser.add_argument("--original", action="store_true", help="the same as --audio original")
    parser.add_argument("--start", metavar="TIME", help="snippet start: SS, SS.s, MM:SS or HH:MM:SS")
    parser.add_argument("--end", metavar="TIME", help="snippet end (not included); default: the end")
    parser.add_argument("--format", choices=tuple(FORMATS), help="output format; needed when OUT is -")
    parser.add_argument("--identity", type=Path, help="age identity file (default: every identity the agent holds)")
    parser.add_argument("--with-facts", action="store_true", help="also write OUT.json tying the file to the call")
    parser.add_argument("--facts-out", type=Path, metavar="FILE", help="write the facts sidecar here (implies it)")
    parser.set_defaults(verb="export")


EXPORT_HELP = """\
Which audio (--audio):
  trimmed   the recording the device sent, silences cut by its VAD (default);
            a call recovered after a crash was never trimmed
  original  the untrimmed, unfiltered original; an error if the device did
            not keep one (audio.keep_original)
  full      the whole call: the original when kept, else the recording

--start and --end are on the chosen audio's own timeline; an end past the end
of the audio is refused, not clipped. The whole recording in its own format is
a byte-for-byte copy of the archived file's plaintext.
"""


def cmd_export(cfg: AgentConfig, args: argparse.Namespace, *, actor: str) -> int:
    """``export ID OUT``: write the audio (and with --with-facts its facts sidecar); prints what it did."""
    from agent.archive import Archive  # noqa: PLC0415
    from agent.integrity import Verifier  # noqa: PLC0415
    from agent.keyring import KeyPaths, load_identities, signing_key, utc_now  # noqa: PLC0415
    from agent.rewrap import rewrap_check  # noqa: PLC0415

    out = "-" if str(args.out) == "-" else Path(args.out)
    fmt = format_for(out, args.format)
    start = parse_time(args.start, "--start") if args.start is not None else None
    end = parse_time(args.end, "--end") if args.end is not None else None
    facts_path = args.facts_out
    if args.with_facts and facts_path is None:
        if out == "-":
            msg = "--with-facts with output to stdout needs --facts-out FILE for the sidecar"
            raise AgentError(msg)
        facts_path = Path(f"{out}.json")
    identities = age.load_identities(args.identity) if args.identity else load_identities(cfg)
    choice = "original" if args.original else args.audio
    stdout = sys.stdout.buffer if out == "-" else None
    with Archive(cfg.agent.archive_dir, cfg.agent.database_path) as archive:
        row = archive.get(args.recording_id)
        source, audio = source_of(row, choice)
        exported = export(source, out, identities, start=start, end=end, fmt=fmt, stdout=stdout)
        if facts_path is not None:
            paths = KeyPaths.from_config(cfg)
            agent_key = signing_key(paths).public_key() if paths.signing_key.exists() else None
            keys = [k for k in identities if isinstance(k, X25519PrivateKey)]
            verifier = Verifier(archive, identities, rewrapped=rewrap_check(archive, agent_key, keys))
            problems = [problem.message for problem in verifier.check(row)]
            facts = export_facts(
                row, exported, audio=audio, choice=choice, problems=problems, output=str(out), actor=actor, at=utc_now()
            )
            _write_json(facts_path, facts)
    span = ""
    whole = (exported.start_frame, exported.end_frame) == (0, exported.total_frames)
    if not whole and exported.sample_rate and exported.end_frame is not None:
        rate = exported.sample_rate
        span = f", {exported.start_frame / rate:.3f}-{exported.end_frame / rate:.3f} s"
    where = "stdout" if out == "-" else str(out)
    print(f"exported {row.id} ({audio}{span}) to {where}", file=sys.stderr if stdout is not None else sys.stdout)
    return 0


def _write_json(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(value, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        msg = f"cannot write the facts file {path}: {exc.strerror or exc}"
        raise AgentError(msg) from None


def verb_export(ctx: Context, args: argparse.Namespace) -> int:
    """``export`` as a verb of the command line: its audit entry first, then the export."""
    from agent.audit import Action  # noqa: PLC0415

    asked = {k: v for k, v in vars(args).items() if k in ("audio", "original", "start", "end", "format")}
    ctx.record(Action.EXPORT, args.recording_id, {"out": str(args.out), **asked, "facts": bool(args.with_facts)})
    return cmd_export(ctx.cfg, args, actor=ctx.actor)


HANDLERS = {"export": verb_export}
