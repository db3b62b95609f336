"""The device's main loop: line events drive the call machine; its actions drive the recorder.

Blocks come from the line backend one at a time (real time on hardware, as fast
as possible on the simulated line). Everything that touches files runs here,
never in an audio callback.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from numpy.typing import NDArray

from firmware import calls
from firmware.calls import (
    Call,
    CallEnded,
    CallState,
    HangupCause,
    PlayGreeting,
    ReleaseLine,
    StartRecording,
    TakeLine,
)
from firmware.config import DeviceConfig
from firmware.dsp.dtmf import DtmfDetector, DtmfDigit
from firmware.encoder import EncodedAudio, EncryptedFlacWriter
from firmware.errors import ConfigError, RecordingError
from firmware.line.base import LineBackend, LineBlock, LineEvent, RingStart, ToneDetector
from firmware.line.listener import CallerIdDecoderLike, CallerIdListener
from firmware.spool import Spool
from firmware.uplink import Uplink
from firmware.wire import age
from firmware.wire.manifest import Manifest, firmware_version, new_recording_id, sign_manifest, utc_iso

log = logging.getLogger("linerec.service")

AUDIO_FILE = "audio.flac.age"
MANIFEST_FILE = "manifest.age"


class CallRecorder:
    """Writes one call at a time into the spool: encrypted audio, then the signed manifest."""

    def __init__(
        self,
        *,
        config: DeviceConfig,
        spool: Spool,
        signing_key: Ed25519PrivateKey,
        sample_rate: int,
        on_sealed: Callable[[str], None] = lambda _rec_id: None,
    ) -> None:
        self._config = config
        self._spool = spool
        self._key = signing_key
        self._rate = sample_rate
        self._on_sealed = on_sealed
        self._rec_id: str | None = None
        self._writer: EncryptedFlacWriter | None = None
        # Keys pressed during the call, in seconds from the start of the recording.
        self._dtmf = DtmfDetector(sample_rate)
        self._digits: list[DtmfDigit] = []

    @property
    def active(self) -> bool:
        """True while a call's audio is being written."""
        return self._writer is not None

    def start(self, t: float) -> None:
        """Open a new recording whose audio starts at ``t``."""
        self._open(t)

    def _open(self, t: float) -> EncryptedFlacWriter:
        self._dtmf.reset()
        self._digits = []
        self._rec_id = new_recording_id(t)
        folder = self._spool.begin(self._rec_id)
        self._writer = EncryptedFlacWriter(
            folder / AUDIO_FILE, recipients=self._config.archive.recipients, sample_rate=self._rate
        )
        return self._writer

    def write(self, block: NDArray[np.int16]) -> None:
        """Append captured audio to the open recording."""
        if self._writer is not None:
            self._writer.write(block)
            self._digits += self._dtmf.feed(block)

    def finish(self, call: Call) -> str:
        """Close the call's audio (an unanswered call gets an empty one), sign, encrypt and seal."""
        started = call.first_ring_at if call.first_ring_at is not None else call.answered_at
        writer = self._writer or self._open(started if started is not None else 0.0)
        rec_id = self._rec_id
        assert rec_id is not None
        self._writer = None
        self._rec_id = None
        audio = writer.close()
        self._digits += self._dtmf.flush()
        manifest = self._manifest(rec_id, call, audio)
        doc = age.encrypt_bytes(sign_manifest(manifest, self._key), self._config.archive.recipients)
        _write_durably(audio.path.parent / MANIFEST_FILE, doc)
        self._spool.seal(rec_id)
        log.info("recording %s sealed (%.1f s, %d bytes)", rec_id, audio.duration_s, audio.size)
        self._on_sealed(rec_id)
        return rec_id

    def _manifest(self, rec_id: str, call: Call, audio: EncodedAudio) -> Manifest:
        started = call.first_ring_at if call.first_ring_at is not None else call.answered_at
        caller = call.caller_id.to_json() if call.caller_id is not None else None
        return Manifest(
            recording_id=rec_id,
            device_id=self._config.device.id,
            line=self._config.device.line_name,
            started_at=utc_iso(started) or "",
            answered_at=utc_iso(call.answered_at),
            ended_at=utc_iso(call.ended_at) or "",
            ring_count=call.ring_count,
            answered=call.answered,
            hangup_cause=str(call.hangup_cause or HangupCause.LINE_LOST),
            caller_id=caller,
            consent=None,
            audio={
                "codec": audio.codec,
                "sample_rate": audio.sample_rate,
                "channels": 1,
                "frames": audio.frames,
                "duration_s": round(audio.duration_s, 3),
                "pcm_sha256": audio.pcm_sha256,
                "trimmed": False,
                "trim_map": [[0.0, round(audio.duration_s, 3)]] if audio.frames else [],
                "dtmf": [d.to_json() for d in self._digits],
                "overflows": 0,
            },
            ciphertext={"file": AUDIO_FILE, "size": audio.size, "sha256": audio.sha256},
            firmware_version=firmware_version(),
            extra={"answered_by": call.answered_by, "call_waiting_alerts": call.call_waiting},
        )


def _mean_square(audio: NDArray[np.int16]) -> float:
    return float(np.mean(np.square(audio, dtype=np.float64))) if len(audio) else 0.0


def load_greeting(path: Path | None, sample_rate: int) -> NDArray[np.int16]:
    """The answering machine's greeting: the owner's file, or a half-second 1400 Hz recorder tone."""
    if path is None:
        t = np.arange(sample_rate // 2) / sample_rate
        return (0.3 * 32767 * np.sin(2 * np.pi * 1400.0 * t)).astype(np.int16)
    try:
        audio, rate = sf.read(path, dtype="int16", always_2d=True)
    except (OSError, RuntimeError) as exc:
        msg = f"calls.greeting {path} cannot be read as audio: {exc}"
        raise ConfigError(msg) from None
    if rate != sample_rate:
        msg = f"calls.greeting {path} is at {rate} Hz; record it at the line's {sample_rate} Hz"
        raise ConfigError(msg)
    mono: NDArray[np.int16] = audio[:, 0].copy()
    return mono


def _write_durably(path: Path, data: bytes) -> None:
    try:
        with path.open("xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        msg = f"cannot write {path}: {exc.strerror}"
        raise RecordingError(msg) from None


class DeviceService:
    """Runs the line: reads blocks, steps the call machine, records, seals and hands to the uplink."""

    def __init__(
        self,
        *,
        config: DeviceConfig,
        backend: LineBackend,
        spool: Spool,
        signing_key: Ed25519PrivateKey,
        uplink: Uplink | None = None,
        tone_detector: ToneDetector | None = None,
        caller_id_decoder: CallerIdDecoderLike | None = None,
    ) -> None:
        self._config = config
        self._backend = backend
        # Call-progress tones heard in the call's audio end it when nothing better says so.
        self._tones = tone_detector
        # Caller ID that arrives as on-hook audio (the board, the simulated line).
        self._listener = CallerIdListener(caller_id_decoder) if caller_id_decoder is not None else None
        self._uplink = uplink
        c = config.calls
        self._policy = calls.CallPolicy(
            ring_timeout_s=c.ring_timeout_s,
            silence_timeout_s=c.silence_timeout_s,
            max_call_s=c.max_call_s,
            polarity_hangup=c.polarity_hangup,
            answering_machine=c.answering_machine,
            answer_after_rings=c.answer_after_rings,
            message_max_s=c.message_max_s,
        )
        # Mean square of a block at the silence threshold, for int16 samples.
        self._quiet_ms = (32768.0 * 10 ** (c.silence_threshold_dbfs / 20)) ** 2
        self._greeting = load_greeting(c.greeting, backend.sample_rate)
        self._recorder = CallRecorder(
            config=config,
            spool=spool,
            signing_key=signing_key,
            sample_rate=backend.sample_rate,
            on_sealed=self._sealed,
        )
        self.recorded: list[str] = []
        self.call: Call = calls.IDLE

    @classmethod
    def on_line(
        cls,
        *,
        config: DeviceConfig,
        backend: LineBackend,
        spool: Spool,
        signing_key: Ed25519PrivateKey,
        uplink: Uplink | None = None,
    ) -> DeviceService:
        """The service with the tone detector and caller ID decoder the configured line path needs."""
        tones, caller_ids = line_decoders(config)
        return cls(
            config=config,
            backend=backend,
            spool=spool,
            signing_key=signing_key,
            uplink=uplink,
            tone_detector=tones,
            caller_id_decoder=caller_ids,
        )

    def run(self, stop: threading.Event | None = None) -> list[str]:
        """Serve the line until it closes or ``stop`` is set; returns the recordings sealed."""
        rate = self._backend.sample_rate
        t = 0.0
        while stop is None or not stop.is_set():
            block = self._backend.read_block()
            if block is None:
                break
            for event in (*block.events, *self._listen(block)):
                before = self.call
                self.call, actions = calls.step(self.call, event, self._policy)
                self._announce(before, self.call, event)
                self._act(actions)
            t = block.t + len(block.audio) / rate
            if self._recorder.active:
                self._recorder.write(block.audio)
                if _mean_square(block.audio) > self._quiet_ms:
                    self.call = calls.heard(self.call, t)
                for tone in self._tones.feed(block.t, block.audio) if self._tones else ():
                    self.call, actions = calls.step(self.call, tone, self._policy)
                    self._act(actions)
            self.call, actions = calls.tick(self.call, t, self._policy)
            self._act(actions)
        self.call, actions = calls.line_lost(self.call, t)
        self._act(actions)
        return self.recorded

    def _listen(self, block: LineBlock) -> Sequence[LineEvent]:
        """Caller ID decoded from the block's on-hook audio (none once the call is answered)."""
        if self._listener is None:
            return []
        for event in block.events:
            self._listener.observe(event)
        if self.call.state is CallState.ANSWERED:
            return []
        return self._listener.feed(block.t, block.audio)

    def _act(self, actions: tuple[calls.Action, ...]) -> None:
        for action in actions:
            if isinstance(action, StartRecording):
                self._recorder.start(action.t)
                if self._tones is not None:
                    self._tones.reset()
            elif isinstance(action, TakeLine):
                self._backend.set_hook(True)
            elif isinstance(action, PlayGreeting):
                self._backend.play(self._greeting)
            elif isinstance(action, ReleaseLine):
                self._backend.set_hook(False)
            elif isinstance(action, CallEnded):
                self._recorder.finish(action.call)
                self._event("ended" if action.call.answered else "missed", action.call)

    def _announce(self, before: Call, after: Call, event: object) -> None:
        if isinstance(event, RingStart) and after.state is CallState.RINGING:
            self._event("ringing", after)
        elif before.state is not CallState.ANSWERED and after.state is CallState.ANSWERED:
            self._event("answered", after)

    def _event(self, kind: str, call: Call) -> None:
        facts: dict[str, object] = {"ring_count": call.ring_count, "line": self._config.device.line_name}
        if kind in ("ended", "missed"):
            facts["answered"] = call.answered
            facts["hangup_cause"] = str(call.hangup_cause)
        log.info("line %s: %s %s", self._config.device.line_name, kind, _describe(kind, call))
        if self._config.uplink.events_include_caller_id and call.caller_id is not None:
            facts["caller_id"] = {"number": call.caller_id.number, "name": call.caller_id.name}
        if self._uplink is not None:
            self._uplink.publish_event(kind, **facts)

    def _sealed(self, rec_id: str) -> None:
        self.recorded.append(rec_id)
        if self._uplink is not None:
            self._uplink.notify()


def _describe(kind: str, call: Call) -> str:
    """A few words for the log about the call at this event (the log never shows the number)."""
    if kind == "ringing":
        return f"(ring {call.ring_count})"
    if kind == "answered":
        return "(caller ID received)" if call.caller_id is not None else "(no caller ID yet)"
    return f"({call.hangup_cause}, {'answered' if call.answered else 'not answered'})"


def line_decoders(config: DeviceConfig) -> tuple[ToneDetector | None, CallerIdDecoderLike | None]:
    """The tone detector and caller ID decoder a line path needs.

    Backends that carry raw line audio (the board, the simulated line) need both;
    a voice modem reports tones and caller ID itself.
    """
    if config.device.line == "modem":
        return None, None
    from firmware.dsp.callerid import LineCallerIdDecoder  # noqa: PLC0415
    from firmware.dsp.tones import CallProgressDetector, load_tone_plan  # noqa: PLC0415

    country = config.line.country
    try:
        load_tone_plan(country)
    except ConfigError:
        log.info("no call-progress tone plan for %s; listening for the default tones", country)
        country = "default"
    return CallProgressDetector(country, config.audio.sample_rate), LineCallerIdDecoder(config.audio.sample_rate)
