"""The device's main loop: line events drive the call machine; its actions drive the recorder.

Blocks come from the line backend one at a time (real time on hardware, as fast
as possible on the simulated line). Everything that touches files runs here,
never in an audio callback.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
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
    PlayGreeting,
    ReleaseLine,
    StartRecording,
    TakeLine,
)
from firmware.config import DeviceConfig
from firmware.consent.decision import decide
from firmware.consent.notices import NoticeLibrary
from firmware.consent.rules import RuleBook, load_rules
from firmware.consent.session import Consent, ConsentSession
from firmware.errors import ConfigError
from firmware.line.base import BackendHealth, LineBackend, LineBlock, LineEvent, RingStart, ToneDetector
from firmware.line.listener import CallerIdDecoderLike, CallerIdListener
from firmware.logs import set_call_id
from firmware.recorder import CallRecorder
from firmware.spool import Spool
from firmware.uplink import Uplink
from firmware.watchdog import LineWatch
from firmware.wire.manifest import new_recording_id, utc_iso

log = logging.getLogger("linerec.service")

DISK_CHECK_S = 10.0  # how often (line time) the free space of the spool's disk is looked at


class PreRoll:
    """The last few seconds of line audio, prepended to a recording so its first word is whole."""

    def __init__(self, frames: int) -> None:
        self.frames = frames
        self._blocks: deque[NDArray[np.int16]] = deque()
        self._held = 0

    def add(self, block: NDArray[np.int16]) -> None:
        """Keep ``block``, forgetting what is now older than the pre-roll."""
        if self.frames <= 0 or not len(block):
            return
        self._blocks.append(block)
        self._held += len(block)
        while self._held - len(self._blocks[0]) >= self.frames:
            self._held -= len(self._blocks.popleft())

    def take(self) -> NDArray[np.int16]:
        """The held audio, at most ``frames`` long, and forget it."""
        audio = np.concatenate(self._blocks) if self._blocks else np.zeros(0, np.int16)
        self._blocks.clear()
        self._held = 0
        return audio[-self.frames :] if self.frames > 0 else audio[:0]


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
        watch: LineWatch | None = None,
        on_status: Callable[[], None] | None = None,
    ) -> None:
        self._config = config
        # Signs of life for the watchdog: every block read and handled, and the backend's health.
        self.watch = watch if watch is not None else LineWatch()
        # Told whenever what status_facts() says has changed (the status file follows it).
        self._on_status = on_status
        # Tags the log of the call in progress (journalctl LINEREC_CALL_ID=...).
        self._call_id: str | None = None
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
        self._preroll = PreRoll(round(config.audio.preroll_s * backend.sample_rate))
        self._audio_at = 0.0
        self.overflows = 0  # audio blocks lost since the service started
        self._rate = backend.sample_rate
        self._consent: ConsentSession | None = None
        self._own_audio_until = 0.0  # line time until which the line carries what we played
        self._refused_id: str | None = None
        self._spool = spool
        # Free space, checked now and then; below the reserve a new call is not recorded.
        self._disk_low = False
        self._disk_full_call = False
        self._next_disk_check = -math.inf
        if config.consent.enabled:
            self._rules: RuleBook | None = load_rules(config.consent.rule_overrides())
            self._notices: NoticeLibrary | None = NoticeLibrary(
                backend.sample_rate, config.consent.notice_files(), language=config.consent.language
            )
        else:
            self._rules, self._notices = None, None
        self.recorded: list[str] = []
        self.call: Call = calls.IDLE
        self._last_call: dict[str, object] | None = None

    @classmethod
    def on_line(
        cls,
        *,
        config: DeviceConfig,
        backend: LineBackend,
        spool: Spool,
        signing_key: Ed25519PrivateKey,
        uplink: Uplink | None = None,
        watch: LineWatch | None = None,
        on_status: Callable[[], None] | None = None,
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
            watch=watch,
            on_status=on_status,
        )

    def run(self, stop: threading.Event | None = None) -> list[str]:
        """Serve the line until it closes or ``stop`` is set; returns the recordings sealed."""
        rate = self._backend.sample_rate
        t = 0.0
        while stop is None or not stop.is_set():
            self.watch.reading()
            block = self._backend.read_block()
            self.watch.handling()
            if block is None:
                break
            for event in block.events:
                if isinstance(event, BackendHealth):
                    self.watch.backend_health(healthy=event.healthy, detail=event.detail)
            if len(block.audio):
                self._audio_at = block.t  # the first sample a recording started now would hold
            for event in (*block.events, *self._listen(block)):
                before = self.call
                self.call, actions = calls.step(self.call, event, self._policy)
                self._announce(before, self.call, event)
                self._act(actions)
                if self._recorder.active and self.call is not before:
                    self._recorder.note(self.call)
            t = block.t + len(block.audio) / rate
            if len(block.audio):
                self._audio_at = t
            self._take_audio(block, t)
            self.call, actions = calls.tick(self.call, t, self._policy)
            self._act(actions)
            if t >= self._next_disk_check:
                self._check_disk(t)
            if self._consent is not None and self._recorder.active:
                for beep in self._consent.tick(t):
                    self._play(beep.audio, t)
        self.watch.finish()
        self.call, actions = calls.line_lost(self.call, t)
        self._act(actions)
        return self.recorded

    def _take_audio(self, block: LineBlock, t: float) -> None:
        """Record the block (or keep it as pre-roll), and listen to an answered call for its end."""
        if self._recorder.active:
            self._recorder.write(block.audio)
            self._consent_heard(block)
        else:
            self._preroll.add(block.audio)
        # A call goes on whether or not it may be recorded: its end is still heard.
        if self.call.state is not CallState.ANSWERED:
            return
        # Our own notice or beep heard back through the line is not the far end speaking.
        if _mean_square(block.audio) > self._quiet_ms and block.t >= self._own_audio_until:
            self.call = calls.heard(self.call, t)
        for tone in self._tones.feed(block.t, block.audio) if self._tones else ():
            self.call, actions = calls.step(self.call, tone, self._policy)
            self._act(actions)

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
                self._take_overflows()  # what was lost before the call is not the call's
                if self._check_disk(action.t) < self._config.spool.reserve_mb * 1024**2:
                    log.error("the spool's disk is below its reserve: this call is not recorded")
                    self._disk_full_call = True
                    continue
                self._consent = self._consent_for(self.call)
                if self._consent is not None and self._consent.state is Consent.NOT_RECORDED:
                    continue
                self._recorder.start(self._audio_at, self._preroll.take())
                self._recorder.note(self.call)
                if self._tones is not None:
                    self._tones.reset()
                if self._consent is not None:
                    # Played from the next block on: the notice starts within a block of the answer.
                    start = self._audio_at + self._backend.block_frames / self._rate
                    for notice in self._consent.opening(start):
                        self._play(notice.audio, start)
            elif isinstance(action, TakeLine):
                self._backend.set_hook(True)
            elif isinstance(action, PlayGreeting):
                self._play(self._greeting, self._audio_at + self._backend.block_frames / self._rate)
            elif isinstance(action, ReleaseLine):
                self._backend.set_hook(False)
            elif isinstance(action, CallEnded):
                self._end(action.call)
                self._event("ended" if action.call.answered else "missed", action.call)

    def _end(self, call: Call) -> None:
        session, self._consent = self._consent, None
        refused, self._refused_id = self._refused_id, None
        if self._disk_full_call:
            self._disk_full_call = False
            self._recorder.record_without_audio(call, None, reason="disk-full")
            return
        if session is not None and session.state in (Consent.REFUSED, Consent.NOT_RECORDED):
            reason = "refused" if session.state is Consent.REFUSED else "never-record"
            kept = session.evidence(call.answered_at, reference="answer")
            self._recorder.record_without_audio(call, kept, reason=reason, rec_id=refused)
            return
        lost = self._take_overflows() if self._recorder.active else 0
        if lost:
            log.warning("line %s: %d audio blocks lost in the call", self._config.device.line_name, lost)
        evidence = session.evidence(self._recorder.started_at) if session is not None else None
        self._recorder.finish(call, overflows=lost, consent=evidence)

    def _consent_for(self, call: Call) -> ConsentSession | None:
        """The consent session of a call just answered (None when consent handling is off)."""
        if self._notices is None or self._rules is None:
            return None
        c = self._config.consent
        number = call.caller_id.number if call.caller_id is not None else None
        decision = decide(
            number,
            device_region=self._config.consent_region,
            rules=self._rules,
            never_record=c.never_record,
            always_announce=c.always_announce,
        )
        log.info("consent: %s", decision.line())
        return ConsentSession(
            decision,
            self._notices,
            express_timeout_s=c.express_timeout_s,
            beep=c.beep,
            language=c.language_for(decision.caller_region),
        )

    def _consent_heard(self, block: LineBlock) -> None:
        """While an express question waits, listen for the answer; a refusal drops the audio at once."""
        session = self._consent
        if session is None or session.state is not Consent.ASKING:
            return
        session.heard(block.t, block.audio)
        if session.state is Consent.ASKING:
            session.tick(block.t + len(block.audio) / self._rate)
        if session.refused:
            log.info("consent refused (%s): the call is not recorded", (session.answer or {}).get("answer"))
            self._refused_id = self._recorder.refuse()

    def _play(self, audio: NDArray[np.int16], t: float) -> None:
        """Play to the line from about ``t``, queued after what is still playing."""
        # A half-duplex modem plays before it returns: the loop is busy, not stuck, meanwhile.
        self.watch.expect_busy(len(audio) / self._rate)
        self._backend.play(audio)
        self._own_audio_until = max(self._own_audio_until, t) + len(audio) / self._rate

    def _take_overflows(self) -> int:
        lost = self._backend.take_overflows()
        self.overflows += lost
        return lost

    def status_facts(self) -> dict[str, object]:
        """What the status topic says about the line: its state, audio lost so far and the last call.

        The last call says when and how, never who: the status is retained for anyone on the broker.
        """
        # An ended call is handed back as idle at once; the status never shows the passing state.
        state = CallState.IDLE if self.call.state is CallState.ENDED else self.call.state
        return {
            "line_state": state.value,
            "audio_overflows": self.overflows,
            "last_call": self._last_call,
            "disk_alert": self._disk_low,
        }

    def _check_disk(self, t: float) -> int:
        """Free bytes on the spool's disk; a change across the alert level goes to the log, LED and status."""
        self._next_disk_check = t + DISK_CHECK_S
        free = self._spool.free_bytes()
        low = free < self._config.spool.alert_free_mb * 1024**2
        if low != self._disk_low:
            self._disk_low = low
            if low:
                log.warning("the spool's disk has %d MB free, below spool.alert_free_mb", free // 1024**2)
            else:
                log.info("the spool's disk has %d MB free again", free // 1024**2)
            set_led = getattr(self._backend, "set_led", None)
            if set_led is not None:
                set_led("fault" if low else "idle")
            if self._uplink is not None:
                self._uplink.notify_status()
            if self._on_status is not None:
                self._on_status()
        return free

    def _announce(self, before: Call, after: Call, event: LineEvent) -> None:
        if before.state is CallState.IDLE and after.state is not CallState.IDLE:
            self._call_id = new_recording_id(event.t)
            set_call_id(self._call_id)
        if isinstance(event, RingStart) and after.state is CallState.RINGING:
            self._event("ringing", after)
        elif before.state is not CallState.ANSWERED and after.state is CallState.ANSWERED:
            self._event("answered", after)

    def _event(self, kind: str, call: Call) -> None:
        facts: dict[str, object] = {"ring_count": call.ring_count, "line": self._config.device.line_name}
        if kind in ("ended", "missed"):
            facts["answered"] = call.answered
            facts["hangup_cause"] = str(call.hangup_cause)
            self._last_call = _last_call(call)
        log.info("line %s: %s %s", self._config.device.line_name, kind, _describe(kind, call))
        if self._config.uplink.events_include_caller_id and call.caller_id is not None:
            facts["caller_id"] = {"number": call.caller_id.number, "name": call.caller_id.name}
        if self._uplink is not None:
            self._uplink.publish_event(kind, **facts)
            self._uplink.notify_status()  # every event moves the line state
        if self._on_status is not None:
            self._on_status()
        if kind in ("ended", "missed"):
            self._call_id = None
            set_call_id(None)

    def _sealed(self, rec_id: str) -> None:
        self.recorded.append(rec_id)
        if self._uplink is not None:
            self._uplink.notify()


def _last_call(call: Call) -> dict[str, object]:
    """The status's account of a finished call: when, whether answered, how long, why it ended."""
    started = call.first_ring_at if call.first_ring_at is not None else call.answered_at
    duration = None
    if call.answered_at is not None and call.ended_at is not None:
        duration = round(max(0.0, call.ended_at - call.answered_at), 3)
    return {
        "started_at": utc_iso(started),
        "ended_at": utc_iso(call.ended_at),
        "answered": call.answered,
        "duration_s": duration,
        "hangup_cause": str(call.hangup_cause) if call.hangup_cause is not None else None,
        "rings": call.ring_count,
    }


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
