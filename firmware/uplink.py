"""The MQTT publisher that drains the spool: manifest, chunks and fin out, acks back.

One worker thread delivers the oldest sealed recording at a time. A recording
leaves the spool only when the agent's ack says it is stored; everything else
(a dead broker, a missing ack, a refused publish) leaves it where it is and is
retried later with exponential back-off. The broker's queue is never trusted:
the MQTT session starts clean on every connection and the spool is the copy
that counts.

Resuming is cheap: the first attempt at a recording sends everything, a retry
sends only the fin, and the agent answers with the byte ranges it already holds
so that only the chunks it lacks go out again.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from firmware.homeassistant import Discovery
from firmware.spool import Spool, SpooledRecording, SpoolError
from firmware.wire import topics
from firmware.wire.broker import BrokerSettings, BrokerSettingsError
from firmware.wire.errors import LinerecError, WireError
from firmware.wire.manifest import firmware_version
from firmware.wire.messages import (
    MAX_CHUNK_DATA,
    Ack,
    AckStatus,
    Fin,
    decode_ack,
    encode_chunk,
    encode_event,
    encode_fin,
    encode_status,
    missing_ranges,
)

log = logging.getLogger("linerec.uplink")

MAX_MISSING_ROUNDS = 5  # resend rounds for one attempt before backing off
PUBLISH_WINDOW = 8  # chunks in flight at once (below mosquitto's 20 in-flight default)
FULL_SEND_EVERY = 4  # a retry is fin-only, but every 4th attempt sends everything in case the agent forgot
WAIT_SLICE_S = 0.5  # longest wait between checks of stop, connection and heartbeat
ACK_BACKLOG = 256


class UplinkError(LinerecError, ValueError):
    """An uplink setting cannot work."""


class _Retry(Exception):
    """This attempt at a recording failed; it stays in the spool for a later one."""


class _Stopping(Exception):
    """The uplink is shutting down."""


class _Tally:
    """SHA-256 and length of the bytes read so far."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.size = 0

    def add(self, data: bytes) -> None:
        self.sha.update(data)
        self.size += len(data)


class _Pace:
    """A token bucket for the recordings' bytes: how long to wait before sending ``n`` more.

    The bucket may go into debt by one message, so a message larger than the
    burst still goes, and the wait after it pays for it.
    """

    def __init__(self, bytes_per_s: float, *, burst: int) -> None:
        self._rate = bytes_per_s
        self._burst = float(burst)
        self._tokens = float(burst)
        self._at = time.monotonic()

    def delay(self, n: int) -> float:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        wait = max(0.0, -self._tokens / self._rate)
        self._tokens -= n
        return wait


class Uplink:
    """Delivers sealed recordings from a Spool to the agent over MQTT and publishes device status."""

    def __init__(
        self,
        *,
        device_id: str,
        spool: Spool,
        broker: BrokerSettings,
        chunk_size: int = 65536,
        ack_timeout_s: float = 30.0,
        publish_timeout_s: float = 10.0,
        retry_backoff_s: tuple[float, float] = (1.0, 60.0),
        status_facts: Callable[[], dict[str, object]] | None = None,
        discovery: Discovery | None = None,
        pace_kb_s: float = 0.0,
        on_recipients: Callable[[bytes], object] | None = None,
    ) -> None:
        self._device_id = topics.check_device_id(device_id)
        if not pace_kb_s >= 0:
            msg = f"uplink pace_kb_s is {pace_kb_s}; expected kilobytes per second, or 0 for no limit"
            raise UplinkError(msg)
        if not 0 < chunk_size <= MAX_CHUNK_DATA:
            msg = f"uplink chunk_size is {chunk_size}; expected 1-{MAX_CHUNK_DATA} bytes"
            raise UplinkError(msg)
        for name, value in (("ack_timeout_s", ack_timeout_s), ("publish_timeout_s", publish_timeout_s)):
            if not value > 0:
                msg = f"uplink {name} is {value}; expected a number of seconds above 0"
                raise UplinkError(msg)
        low, high = retry_backoff_s
        if not 0 < low <= high:
            msg = f"uplink retry_backoff_s is {retry_backoff_s}; expected (first, longest) seconds, first > 0"
            raise UplinkError(msg)
        self._spool = spool
        self._broker = broker
        self._chunk_size = chunk_size
        self._ack_timeout_s = ack_timeout_s
        self._publish_timeout_s = publish_timeout_s
        self._backoff = (low, high)
        self._status_facts = status_facts
        if discovery is not None and discovery.device_id != self._device_id:
            msg = f"uplink discovery is for device {discovery.device_id!r}; expected {self._device_id!r}"
            raise UplinkError(msg)
        self._discovery = discovery
        # Takes each message on linerec/<device>/recipients (firmware/recipients.py); runs on the
        # network thread, so it must return quickly.
        self._on_recipients = on_recipients
        self._stuck_after_s = max(60.0, 2 * publish_timeout_s + WAIT_SLICE_S)
        self._pace = _Pace(pace_kb_s * 1000, burst=chunk_size) if pace_kb_s > 0 else None

        # Shared with the network thread; guarded by _cond.
        self._cond = threading.Condition()
        self._connected = False
        self._subscribed = False
        self._sub_mid: int | None = None
        self._generation = 0
        self._status_due = False
        self._wake = False
        self._stopping = False
        self._acks: deque[tuple[int, Ack]] = deque(maxlen=ACK_BACKLOG)
        self._ack_seq = 0
        self._pub_lock = threading.Lock()
        # One status at a time, so that an older snapshot never lands after a newer one.
        self._status_lock = threading.Lock()
        self._refused: dict[int, ReasonCode] = {}  # mid -> failure reason code from PUBACK

        # The worker's own state.
        self._thread: threading.Thread | None = None
        self._heartbeat = time.monotonic()
        self._failures = 0
        self._attempts: dict[str, int] = {}
        self._fins: dict[str, Fin] = {}  # size and SHA-256 of each file sent whole
        self._ahead: set[str] = set()  # recordings whose bytes went out while the one before was being stored
        self._published_depth: int | None = None
        self._client = self._make_client()

    # -- setup ----------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        try:
            client = self._broker.client(f"linerec-{self._device_id}")
        except BrokerSettingsError as exc:
            raise UplinkError(f"uplink: {exc}") from None
        client.will_set(topics.status(self._device_id), encode_status("offline"), qos=1, retain=True)
        low, high = self._backoff
        client.reconnect_delay_set(max(1, math.ceil(low)), max(1, math.ceil(high)))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    # -- public API -----------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background and start draining the spool."""
        if self._thread is not None:
            msg = "uplink is already started; make a new Uplink to start again"
            raise UplinkError(msg)
        # Every connection starts a clean session: the spool, not the broker, holds what is unsent.
        clean_start = True if self._broker.protocol == "5" else mqtt.MQTT_CLEAN_START_FIRST_ONLY
        self._client.connect_async(
            self._broker.host, self._broker.port, self._broker.keepalive_s, clean_start=clean_start
        )
        self._client.loop_start()
        self._heartbeat = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="linerec-uplink", daemon=True)
        self._thread.start()
        log.info("uplink for %s started; broker %s", self._device_id, self._broker.address)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the current step, publish ``offline``, disconnect and wait for the threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("uplink worker did not stop within %.1f s", timeout)
        if self.connected:
            try:
                info = self._client.publish(
                    topics.status(self._device_id), self._status_payload("offline"), qos=1, retain=True
                )
                info.wait_for_publish(min(timeout, self._publish_timeout_s))
            except (RuntimeError, ValueError) as exc:
                log.warning("could not publish the offline status: %s", exc)
        self._client.disconnect()
        self._client.loop_stop()
        log.info("uplink for %s stopped", self._device_id)

    def notify(self) -> None:
        """Tell the worker a new recording was sealed."""
        with self._cond:
            self._wake = True
            self._cond.notify_all()

    def notify_status(self) -> None:
        """Publish the status now (the line state changed); without a broker, once it is back."""
        try:
            sent = self.connected and self._publish_status()
        except (SpoolError, OSError) as exc:
            # The caller is the line's loop: a spool that cannot be read must not stop it.
            log.error("status not published now: %s", exc)
            sent = False
        if not sent:
            with self._cond:
                self._status_due = True
                self._cond.notify_all()

    def publish_event(self, kind: str, **facts: object) -> None:
        """Publish a line event at QoS 1 without waiting; a dead broker is logged, not raised."""
        payload = encode_event(kind, facts)
        if not self.connected:
            log.warning("event %r not sent: the broker %s is not connected", kind, self._broker.address)
            return
        info = self._client.publish(topics.event(self._device_id), payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.warning("event %r not sent: %s", kind, mqtt.error_string(info.rc))

    def wait_delivered(self, timeout: float) -> bool:
        """Wait until the spool's outbox is empty; True if it is, False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if self._spool.depth() == 0:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._cond:
                self._cond.wait(min(remaining, 0.2))

    @property
    def connected(self) -> bool:
        """True while the broker connection is up."""
        with self._cond:
            return self._connected

    @property
    def healthy(self) -> bool:
        """True while the worker runs and has shown progress recently."""
        thread = self._thread
        if thread is None or not thread.is_alive() or self._stopping:
            return False
        return time.monotonic() - self._heartbeat < self._stuck_after_s

    # -- network thread callbacks: record and notify, never block --------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason_code: ReasonCode, _p: Any) -> None:
        if reason_code.is_failure:
            log.warning("broker %s refused the connection: %s", self._broker.address, reason_code)
            return
        _rc, mid = client.subscribe(topics.ack(self._device_id), qos=1)
        if self._on_recipients is not None:
            client.subscribe(topics.recipients(self._device_id), qos=1)
        if self._discovery is not None:
            client.subscribe(self._discovery.birth_topic, qos=1)
            self._publish_discovery()
        with self._cond:
            self._connected = True
            self._subscribed = False
            self._sub_mid = mid
            self._generation += 1
            self._status_due = True
            self._cond.notify_all()
        log.info("connected to broker %s", self._broker.address)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason_code: ReasonCode, _p: Any) -> None:
        with self._cond:
            was_connected = self._connected
            self._connected = False
            self._subscribed = False
            self._cond.notify_all()
        if was_connected and not self._stopping:
            log.warning("lost the broker %s: %s", self._broker.address, reason_code)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, mid: int, reason_codes: list[ReasonCode], _p: Any) -> None:
        with self._cond:
            if mid != self._sub_mid:
                return
            if any(rc.is_failure for rc in reason_codes):
                log.error("broker %s refused the ack subscription: %s", self._broker.address, reason_codes)
                return
            self._subscribed = True
            self._cond.notify_all()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        if self._discovery is not None and message.topic == self._discovery.birth_topic:
            # Home Assistant (re)started and may have forgotten the device: describe it again.
            if bytes(message.payload) == b"online":
                self._publish_discovery()
            return
        if message.topic == topics.recipients(self._device_id):
            self._take_recipients(bytes(message.payload))
            return
        try:
            ack = decode_ack(bytes(message.payload))
        except WireError as exc:
            log.warning("ignoring a malformed ack on %s: %s", message.topic, exc)
            return
        with self._cond:
            self._ack_seq += 1
            self._acks.append((self._ack_seq, ack))
            self._cond.notify_all()

    def _take_recipients(self, payload: bytes) -> None:
        if self._on_recipients is None:
            return
        try:
            self._on_recipients(payload)
        except Exception:
            log.exception("the recipients message could not be handled")

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason_code: ReasonCode, _p: Any) -> None:
        # on_publish fires for refusals too; the worker checks this before trusting a PUBACK.
        with self._pub_lock:
            if reason_code.is_failure:
                self._refused[mid] = reason_code
            else:
                self._refused.pop(mid, None)

    # -- worker ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._heartbeat = time.monotonic()
            try:
                self._cycle()
            except _Stopping:
                return
            except Exception:
                # The worker must outlive a surprise (a spool error, a bug): log it and try again later.
                log.exception("uplink worker hit an unexpected error; retrying later")
                try:
                    self._back_off()
                except _Stopping:
                    return

    def _cycle(self) -> None:
        self._wait_for(lambda: True, 0)  # raises _Stopping once stop() was called
        self._handle_stray_acks()
        if self.connected:
            self._maybe_publish_status()
        rec = self._spool.oldest()
        if rec is None:
            self._wait_for(
                lambda: self._wake or (self._status_due and self._connected) or bool(self._acks),
                WAIT_SLICE_S * 2,
            )
            with self._cond:
                self._wake = False
            return
        with self._cond:
            ready = self._connected and self._subscribed
        if not ready:
            self._wait_for(lambda: self._connected and self._subscribed, WAIT_SLICE_S * 2)
            return
        try:
            self._deliver(rec)
        except _Retry as exc:
            log.warning("recording %s is not delivered yet: %s", rec.rec_id, exc)
            self._back_off()
        else:
            self._failures = 0

    def _check_link(self, generation: int) -> None:
        with self._cond:
            if self._stopping:
                raise _Stopping
            if not self._connected or self._generation != generation:
                msg = f"the connection to the broker {self._broker.address} was lost"
                raise _Retry(msg)

    def _wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._stopping or predicate(), timeout)
            if self._stopping:
                raise _Stopping

    def _pause(self, seconds: float, until: Callable[[], bool] = lambda: False) -> None:
        """Wait ``seconds`` or until ``until()`` holds, staying alive to stop() and the watchdog."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            self._heartbeat = time.monotonic()
            self._wait_for(until, min(remaining, WAIT_SLICE_S))
            with self._cond:
                if until():
                    return

    def _back_off(self) -> None:
        """Wait before the next attempt; a fresh connection or stop cuts the wait short."""
        self._failures += 1
        low, high = self._backoff
        with self._cond:
            generation = self._generation
        self._pause(
            min(high, low * 2 ** min(self._failures - 1, 30)),
            until=lambda: self._generation != generation and self._connected,
        )

    # -- status ---------------------------------------------------------------------

    def _status_payload(self, state: str) -> bytes:
        facts: dict[str, object] = {}
        if self._status_facts is not None:
            try:
                facts.update(self._status_facts())
            except Exception:
                log.exception("status_facts failed; publishing the status without its facts")
        facts["firmware_version"] = firmware_version()
        try:
            facts["spool_depth"] = self._spool.depth()
            facts["spool_bytes"] = self._spool.bytes_pending()
        except SpoolError as exc:
            log.error("%s", exc)
        try:
            facts["disk_free_bytes"] = shutil.disk_usage(self._spool.root).free
        except OSError as exc:
            log.error("cannot read the free space of the spool's disk %s: %s", self._spool.root, exc)
        return encode_status(state, facts)

    def _maybe_publish_status(self) -> None:
        depth = self._spool.depth()
        with self._cond:
            due = self._status_due or depth != self._published_depth
            self._status_due = False
        if due and not self._publish_status():
            with self._cond:
                self._status_due = True

    def _publish_status(self) -> bool:
        """Publish the retained ``online`` status without waiting; False if paho refused it."""
        with self._status_lock:
            depth = self._spool.depth()
            info = self._client.publish(
                topics.status(self._device_id), self._status_payload("online"), qos=1, retain=True
            )
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                self._published_depth = depth
                return True
        log.warning("could not publish the status: %s", mqtt.error_string(info.rc))
        return False

    def _publish_discovery(self) -> None:
        """Queue the retained Home Assistant configs; runs on the network thread, so it never waits."""
        if self._discovery is None:
            return
        for topic, payload in self._discovery.messages():
            info = self._client.publish(topic, payload, qos=1, retain=True)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                log.warning("could not publish the discovery config %s: %s", topic, mqtt.error_string(info.rc))

    # -- acks -----------------------------------------------------------------------

    def _handle_stray_acks(self) -> None:
        """Acks that arrive outside a transfer: honour STORED for a pending id, drop the rest."""
        with self._cond:
            stray = [ack for _seq, ack in self._acks]
            self._acks.clear()
        for ack in stray:
            self._honour_stray(ack)

    def _honour_stray(self, ack: Ack) -> None:
        if ack.status is not AckStatus.STORED:
            log.debug("ignoring a %s ack for %s outside its transfer", ack.status, ack.rec_id)
            return
        try:
            self._spool.get(ack.rec_id)
        except SpoolError:
            log.debug("ignoring a repeated stored ack for %s", ack.rec_id)
            return
        self._stored(ack)

    def _wait_ack(self, rec_id: str, mark: int, generation: int) -> Ack:
        """The agent's answer for ``rec_id`` after ack sequence ``mark`` (the fin just sent)."""
        deadline = time.monotonic() + self._ack_timeout_s
        stray: list[Ack] = []
        try:
            while True:
                with self._cond:
                    while self._acks:
                        seq, ack = self._acks.popleft()
                        if ack.rec_id != rec_id:
                            stray.append(ack)
                        elif seq > mark or ack.status is not AckStatus.MISSING:
                            # A late STORED or REJECTED is still the truth; a late MISSING is stale.
                            return ack
                self._check_link(generation)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    msg = f"no ack from the agent within {self._ack_timeout_s:g} s"
                    raise _Retry(msg)
                self._heartbeat = time.monotonic()
                self._wait_for(lambda: bool(self._acks), min(remaining, WAIT_SLICE_S))
        finally:
            for ack in stray:
                self._honour_stray(ack)

    def _stored(self, ack: Ack) -> None:
        self._spool.remove_delivered(ack.rec_id, ack)
        self._attempts.pop(ack.rec_id, None)
        self._fins.pop(ack.rec_id, None)
        self._ahead.discard(ack.rec_id)
        log.info("recording %s is stored by the agent and removed from the spool", ack.rec_id)
        with self._cond:
            self._cond.notify_all()

    def _rejected(self, ack: Ack) -> None:
        self._spool.quarantine(ack.rec_id, ack.reason)
        self._attempts.pop(ack.rec_id, None)
        self._fins.pop(ack.rec_id, None)
        self._ahead.discard(ack.rec_id)
        where = self._spool.rejected / ack.rec_id
        log.error("the agent rejected recording %s (%s); it is kept in %s", ack.rec_id, ack.reason, where)

    # -- transfer -------------------------------------------------------------------

    def _deliver(self, rec: SpooledRecording) -> None:
        attempt = self._attempts.get(rec.rec_id, 0)
        self._attempts[rec.rec_id] = attempt + 1
        with self._cond:
            generation = self._generation
        tally = _Tally()
        if attempt % FULL_SEND_EVERY == 0:
            log.info("sending recording %s (%d bytes)", rec.rec_id, rec.size)
            self._send(itertools.chain([self._manifest(rec)], self._chunks(rec, None, tally)), generation)
        elif rec.rec_id in self._ahead:
            log.debug("recording %s was sent ahead; its fin follows", rec.rec_id)
        else:
            log.info("resuming recording %s: asking the agent what it lacks", rec.rec_id)
            if rec.rec_id not in self._fins:  # the first attempt broke off mid-file: hash it now
                with rec.open() as fh:
                    while data := fh.read(self._chunk_size):
                        tally.add(data)
        self._ahead.discard(rec.rec_id)
        fin = self._fins.setdefault(rec.rec_id, Fin(tally.size, tally.sha.hexdigest()))
        for round_ in range(MAX_MISSING_ROUNDS + 1):
            with self._cond:
                mark = self._ack_seq  # acks up to here answer an earlier fin
            self._send([(topics.fin(self._device_id, rec.rec_id), encode_fin(fin))], generation)
            if round_ == 0:
                self._send_ahead(rec.rec_id, generation)
            ack = self._wait_ack(rec.rec_id, mark, generation)
            if ack.status is AckStatus.STORED:
                self._stored(ack)
                return
            if ack.status is AckStatus.REJECTED:
                self._rejected(ack)
                return
            self._resend(rec, ack, fin.size, generation)
        msg = f"the agent still lacks parts after {MAX_MISSING_ROUNDS} resend rounds"
        raise _Retry(msg)

    def _send_ahead(self, rec_id: str, generation: int) -> None:
        """Send the next recording's manifest and bytes while the agent stores ``rec_id``.

        Only its fin waits for ``rec_id``'s answer, so fins (and what gets stored)
        stay in order while the link does not sit idle during the agent's fsyncs.
        A send cut short leaves nothing noted: that recording goes whole next time.
        """
        following = self._spool.next_after(rec_id)
        if following is None or following.rec_id in self._attempts:
            return
        tally = _Tally()
        log.info("sending recording %s (%d bytes) while %s is stored", following.rec_id, following.size, rec_id)
        self._send(itertools.chain([self._manifest(following)], self._chunks(following, None, tally)), generation)
        self._attempts[following.rec_id] = 1
        self._fins[following.rec_id] = Fin(tally.size, tally.sha.hexdigest())
        self._ahead.add(following.rec_id)

    def _resend(self, rec: SpooledRecording, ack: Ack, size: int, generation: int) -> None:
        gaps = missing_ranges(ack.ranges, size)
        if not gaps and not ack.need_manifest:
            gaps = [(0, size)]  # it says missing yet holds every byte: it no longer trusts its copy
        cs = self._chunk_size
        indexes = sorted({i for start, end in gaps for i in range(start // cs, (end - 1) // cs + 1)})
        log.info("agent lacks %s of %s; resending %d chunk(s)", gaps, rec.rec_id, len(indexes))
        first = [self._manifest(rec)] if ack.need_manifest else []
        self._send(itertools.chain(first, self._chunks(rec, indexes)), generation)

    def _manifest(self, rec: SpooledRecording) -> tuple[str, bytes]:
        return topics.manifest(self._device_id, rec.rec_id), rec.manifest.read_bytes()

    def _chunks(
        self, rec: SpooledRecording, indexes: list[int] | None, tally: _Tally | None = None
    ) -> Iterator[tuple[str, bytes]]:
        """Chunk messages read one at a time: the whole file (``indexes`` None) or the chunks listed."""
        cs = self._chunk_size
        with rec.open() as fh:
            for index in itertools.count() if indexes is None else indexes:
                fh.seek(index * cs)
                data = fh.read(cs)
                if not data:
                    return
                if tally is not None:
                    tally.add(data)
                yield topics.chunk(self._device_id, rec.rec_id, index), encode_chunk(index * cs, data)

    def _send(self, messages: Iterable[tuple[str, bytes]], generation: int) -> None:
        """Publish at QoS 1 with a few in flight; return once the broker has acknowledged them all."""
        inflight: deque[tuple[mqtt.MQTTMessageInfo, str]] = deque()
        for topic, payload in messages:
            if len(inflight) >= PUBLISH_WINDOW:
                self._await(*inflight.popleft(), generation)
            if self._pace is not None:
                self._pause(self._pace.delay(len(payload)))
            self._check_link(generation)
            info = self._client.publish(topic, payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                msg = f"publishing {topic} failed: {mqtt.error_string(info.rc)}"
                raise _Retry(msg)
            inflight.append((info, topic))
        while inflight:
            self._await(*inflight.popleft(), generation)

    def _await(self, info: mqtt.MQTTMessageInfo, topic: str, generation: int) -> None:
        deadline = time.monotonic() + self._publish_timeout_s
        try:
            while not info.is_published():
                self._check_link(generation)
                if time.monotonic() > deadline:
                    msg = f"the broker did not acknowledge {topic} within {self._publish_timeout_s:g} s"
                    raise _Retry(msg)
                self._heartbeat = time.monotonic()
                info.wait_for_publish(WAIT_SLICE_S)
        except (RuntimeError, ValueError) as exc:
            msg = f"publishing {topic} failed: {exc}"
            raise _Retry(msg) from exc
        with self._pub_lock:
            refused = self._refused.pop(info.mid, None)
        if refused is not None:
            msg = f"the broker refused {topic}: {refused}"
            raise _Retry(msg)
