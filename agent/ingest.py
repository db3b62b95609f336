"""Ingest: receive recordings over MQTT, reassemble them, verify them, archive them, ack them.

A recording arrives as its manifest, chunks of ciphertext at byte offsets, and a
fin, in any order and possibly more than once (QoS 1). Everything about a
transfer in progress lives on disk under ``<archive>/.incoming/<device>/<id>/``
(``agent/incoming.py``), so an agent that restarts carries on where it was. A device deletes its copy only when it reads
``stored``, which is sent after the archive has fsynced the files and committed
the index row.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from paho.mqtt.reasoncodes import ReasonCode

from agent.archive import Archive, CallRow
from agent.errors import AgentError
from agent.incoming import Transfer, clip, covered, write_atomic
from agent.parts import PartsError, check_parts, split_original
from agent.ratelimit import DeviceRateLimit
from agent.recovered import with_recovered_facts
from firmware.wire import topics
from firmware.wire.age import decrypt_bytes
from firmware.wire.broker import BrokerSettings, BrokerSettingsError
from firmware.wire.errors import AgeError, LinerecError, SignatureError, WireError
from firmware.wire.manifest import Manifest, unverified_device_id, verify_manifest
from firmware.wire.messages import (
    Ack,
    AckStatus,
    Range,
    decode_chunk,
    decode_fin,
    decode_status,
    encode_ack,
    missing_ranges,
)

log = logging.getLogger("linerec.agent.ingest")

# Per device: 64 MB/s sustained, 128 MB at once: far above a phone line (a few kB/s) and a
# backlog over a LAN, but a bound on a device (or something posing as one) gone wild.
DEFAULT_RATE = 64 * 1024**2
DEFAULT_BURST = 128 * 1024**2
MAX_TRANSFER = 2 * 1024**3  # no call recording comes near this; a bigger offset is an attack or a bug
# Messages wait here between paho's network thread and the worker that does the disk work;
# when it is full the network thread waits too, which is the back-pressure we want.
_QUEUE_DEPTH = 256

Reply = tuple[str, bytes]


class _Refused(WireError):
    """A manifest that will never be accepted as sent; the text is the reason told to the device."""


class Ingest:
    """The agent's receiving end: one MQTT client, one worker thread, one archive."""

    def __init__(
        self,
        *,
        archive: Archive,
        identities: Sequence[X25519PrivateKey],
        broker: BrokerSettings,
        client_id: str = "linerec-agent",
        rate_limit: DeviceRateLimit | None = None,
        on_stored: Callable[[CallRow], object] | None = None,
    ) -> None:
        """``on_stored`` hears of each archived recording before its device is told (notifications).

        It is called again when a device asks about a recording already stored, so it
        must be idempotent; a crash between the index commit and the call is then made
        good by the device's next fin. An exception it raises is logged, not passed on.
        """
        if not identities:
            msg = "ingest needs at least one age identity to open manifests; none was given"
            raise AgentError(msg)
        if not client_id:
            msg = "ingest client_id is empty; give the MQTT client id the agent connects with"
            raise AgentError(msg)
        self._archive = archive
        self._identities = tuple(identities)
        self._broker = broker
        self._client_id = client_id
        self._limit = rate_limit or DeviceRateLimit(rate=DEFAULT_RATE, burst=DEFAULT_BURST)
        self._on_stored = on_stored
        self._lock = threading.RLock()
        self._transfers: dict[tuple[str, str], Transfer] = {}
        self._told_unenrolled: set[str] = set()
        self._stored = threading.Condition()
        self._stored_count = 0
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(maxsize=_QUEUE_DEPTH)
        self._ready = threading.Event()
        self._client: mqtt.Client | None = None
        self._worker: threading.Thread | None = None

    @property
    def stored_count(self) -> int:
        """How many recordings this object has archived since it was made."""
        with self._stored:
            return self._stored_count

    def wait_stored(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` recordings have been archived; False if ``timeout`` s pass first."""
        with self._stored:
            return self._stored.wait_for(lambda: self._stored_count >= count, timeout)

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the agent is connected and subscribed; False if ``timeout`` s pass first."""
        return self._ready.wait(timeout)

    # --- the core ----------------------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> list[Reply]:
        """Process one message; return the acks to publish as ``(topic, payload)`` pairs.

        Bad input from the network is logged and answered (or dropped), never raised.
        """
        try:
            with self._lock:
                if not self._within_budget(topic, len(payload)):
                    return []
                return self._dispatch(topic, bytes(payload))
        except (LinerecError, OSError) as exc:
            log.warning("message on %s not processed: %s", topic, exc)
            return []

    def _within_budget(self, topic: str, size: int) -> bool:
        """Whether the sending device is within its budget; over it, the message is dropped."""
        try:
            device = topics.device_of(topic)
        except WireError:
            return True  # not a device's topic: dispatch ignores it anyway
        if self._limit.allow(device, size):
            if dropped := self._limit.take_dropped(device):
                log.info("device %s is within its budget again; %d messages were dropped", device, dropped)
            return True
        if self._limit.dropped(device) == 1:  # once per run of drops, not per message
            log.warning("device %s is over its budget of %.0f bytes/s; dropping its messages", device, self._limit.rate)
        return False

    def _dispatch(self, topic: str, payload: bytes) -> list[Reply]:
        parts = topic.split("/")
        if len(parts) == 3 and parts[0] == topics.ROOT and parts[2] == "status":
            self._on_status(topics.device_of(topic), payload)
            return []
        try:
            where = topics.parse_rec_topic(topic)
        except WireError as exc:
            log.debug("ignoring a message: %s", exc)
            return []
        if where.kind == "manifest":
            return self._on_manifest(where, payload)
        if where.kind == "chunk":
            self._on_chunk(where, payload)
            return []
        return self._on_fin(where, payload)

    def _on_status(self, device: str, payload: bytes) -> None:
        if payload:  # an empty retained message only clears the topic
            self._archive.note_status(device, decode_status(payload))

    def _ack(
        self,
        where: topics.RecTopic,
        status: AckStatus,
        *,
        ranges: Sequence[Range] = (),
        need_manifest: bool = False,
        reason: str = "",
    ) -> list[Reply]:
        ack = Ack(where.rec_id, status, tuple(ranges), need_manifest, reason)
        return [(topics.ack(where.device_id), encode_ack(ack))]

    def _reject(self, where: topics.RecTopic, reason: str) -> list[Reply]:
        self._archive.log_rejection(where.device_id, where.rec_id, reason)
        return self._ack(where, AckStatus.REJECTED, reason=reason)

    def _already_stored(self, where: topics.RecTopic, *, announce: bool = False) -> list[Reply] | None:
        """The answer for a recording that is archived already (or was, and is purged), or None if not."""
        if not self._archive.has(where.rec_id):
            return self._already_purged(where)
        row = self._archive.get(where.rec_id)
        if row.device != where.device_id:
            return self._reject(where, f"recording id {where.rec_id} is already archived from device {row.device}")
        if announce:
            self._announce(row)
        return self._ack(where, AckStatus.STORED)

    def _already_purged(self, where: topics.RecTopic) -> list[Reply] | None:
        """``stored`` for a recording retention deleted, sent again by a device that never had its ack.

        It is not archived again: the device may delete its copy, as retention wants.
        """
        device = self._archive.purged_from(where.rec_id)
        if device is None:
            return None
        if device != where.device_id:
            return self._reject(where, f"recording id {where.rec_id} was archived from device {device}")
        self._transfers.pop((where.device_id, where.rec_id), None)
        shutil.rmtree(self._archive.incoming_dir / where.device_id / where.rec_id, ignore_errors=True)
        log.info("recording %s was purged by retention; the device's copy is answered stored, not kept", where.rec_id)
        return self._ack(where, AckStatus.STORED)

    def _announce(self, row: CallRow) -> None:
        """Tell ``on_stored`` about an archived recording; its failure must not cost the device its ack."""
        if self._on_stored is None:
            return
        try:
            self._on_stored(row)
        except Exception:
            log.exception("recording %s is archived, but telling about it failed", row.id)

    def _enrolled_key(self, device: str) -> Ed25519PublicKey | None:
        key = self._archive.device_key(device)
        if key is None and device not in self._told_unenrolled:
            self._told_unenrolled.add(device)
            log.warning("device %s is not enrolled: its recordings are refused", device)
        return key

    # --- manifest ----------------------------------------------------------------

    def _on_manifest(self, where: topics.RecTopic, payload: bytes) -> list[Reply]:
        if (answer := self._already_stored(where)) is not None:
            return answer
        key = self._enrolled_key(where.device_id)
        if key is None:
            return self._reject(where, f"device {where.device_id} is not enrolled")
        try:
            manifest = self._open_manifest(where, payload, key)
        except _Refused as exc:
            if self._holds_manifest(where):
                # The device's own manifest is already here and verified: this copy was damaged in
                # transit or sent by someone else, and must not cost the recording its place.
                self._archive.log_rejection(where.device_id, where.rec_id, f"a second manifest copy: {exc}")
                return []
            return self._reject(where, str(exc))
        transfer = self._transfer(where)
        if transfer.manifest_doc == payload:
            return []
        if transfer.manifest is not None and transfer.manifest.ciphertext != manifest.ciphertext:
            log.warning("recording %s: a new manifest names other ciphertext; held bytes dropped", where.rec_id)
            transfer.discard_data()
        transfer.directory.mkdir(parents=True, exist_ok=True)
        # A cache like the chunks: the archive writes (and fsyncs) its own copy from memory
        # before any ack; one a power cut damaged is dropped at load and asked for again.
        write_atomic(transfer.manifest_file, payload, durable=False)
        transfer.manifest, transfer.manifest_doc = manifest, payload
        log.info("recording %s of device %s: manifest verified", where.rec_id, where.device_id)
        return []

    def _holds_manifest(self, where: topics.RecTopic) -> bool:
        """Whether a verified manifest for this recording is held (in memory, or on disk from before a restart)."""
        held = self._transfers.get((where.device_id, where.rec_id))
        if held is not None:
            return held.manifest is not None
        return (self._archive.incoming_dir / where.device_id / where.rec_id / "manifest.age").is_file()

    def _open_manifest(self, where: topics.RecTopic, payload: bytes, key: Ed25519PublicKey) -> Manifest:
        """Decrypt and verify a manifest message, or raise _Refused saying why not."""
        try:
            doc = decrypt_bytes(payload, self._identities)
        except AgeError as exc:
            raise _Refused(f"cannot decrypt manifest: {exc}") from None
        try:
            claimed = unverified_device_id(doc)
            if claimed != where.device_id:
                msg = f"manifest names device {claimed} but came on the topic of device {where.device_id}"
                raise _Refused(msg)
            manifest = verify_manifest(doc, key)
        except _Refused:
            raise
        except SignatureError as exc:
            raise _Refused(str(exc)) from None
        except WireError as exc:
            raise _Refused(f"manifest is malformed: {exc}") from None
        if manifest.recording_id != where.rec_id:
            msg = f"manifest is for recording {manifest.recording_id} but came on the topic of {where.rec_id}"
            raise _Refused(msg)
        size = manifest.ciphertext["size"]
        if not 0 <= size <= MAX_TRANSFER:
            raise _Refused(f"manifest is malformed: ciphertext size {size} is outside 0..{MAX_TRANSFER}")
        try:
            check_parts(manifest.ciphertext)
        except PartsError as exc:
            raise _Refused(f"manifest is malformed: {exc}") from None
        return with_recovered_facts(manifest, self._identities)

    # --- transfer state on disk --------------------------------------------------

    def _transfer(self, where: topics.RecTopic) -> Transfer:
        """The state of a transfer, loaded from the incoming directory the first time."""
        found = self._transfers.get((where.device_id, where.rec_id))
        if found is not None:
            return found
        directory = self._archive.incoming_dir / where.device_id / where.rec_id
        transfer = Transfer(where.device_id, where.rec_id, directory)
        key = self._archive.device_key(where.device_id)
        if key is not None and transfer.manifest_file.exists():
            doc = transfer.manifest_file.read_bytes()
            try:
                transfer.manifest, transfer.manifest_doc = self._open_manifest(where, doc, key), doc
            except _Refused as exc:
                log.warning("recording %s: kept manifest dropped: %s", where.rec_id, exc)
                transfer.manifest_file.unlink()
        transfer.ranges = transfer.load_ranges()
        self._transfers[(where.device_id, where.rec_id)] = transfer
        return transfer

    def _flush_ranges(self) -> None:
        """Write every transfer's ranges that changed since its last save (at stop, so a restart resumes exactly)."""
        for transfer in self._transfers.values():
            if transfer.ranges_dirty and transfer.directory.is_dir():
                transfer.save_ranges()

    def _forget(self, transfer: Transfer) -> None:
        self._transfers.pop((transfer.device, transfer.rec_id), None)
        shutil.rmtree(transfer.directory, ignore_errors=True)

    # --- chunks ------------------------------------------------------------------

    def _on_chunk(self, where: topics.RecTopic, payload: bytes) -> None:
        if self._archive.settled(where.rec_id):
            log.debug("recording %s: chunk after it was stored, ignored", where.rec_id)
            return
        if self._enrolled_key(where.device_id) is None:
            return
        try:
            chunk = decode_chunk(payload)
        except WireError as exc:
            log.warning("recording %s of device %s: chunk dropped: %s", where.rec_id, where.device_id, exc)
            return
        start, end = chunk.offset, chunk.offset + len(chunk.data)
        transfer = self._transfer(where)
        limit = transfer.manifest.ciphertext["size"] if transfer.manifest is not None else MAX_TRANSFER
        if end > limit:
            log.warning(
                "recording %s: chunk at %d..%d is beyond its %d bytes; dropped", where.rec_id, start, end, limit
            )
            return
        if covered(transfer.ranges, start, end):
            return
        transfer.write_chunk(start, chunk.data)

    # --- fin ---------------------------------------------------------------------

    def _on_fin(self, where: topics.RecTopic, payload: bytes) -> list[Reply]:
        fin = decode_fin(payload)
        if (answer := self._already_stored(where, announce=True)) is not None:
            return answer
        if self._enrolled_key(where.device_id) is None:
            return self._ack(where, AckStatus.REJECTED, reason=f"device {where.device_id} is not enrolled")
        transfer = self._transfer(where)
        if transfer.manifest is None or transfer.manifest_doc is None:
            return self._ack(where, AckStatus.MISSING, ranges=transfer.ranges, need_manifest=True)
        size = int(transfer.manifest.ciphertext["size"])
        expected = str(transfer.manifest.ciphertext["sha256"]).lower()
        held = clip(transfer.ranges, size)
        if missing_ranges(held, size):
            if transfer.ranges_dirty:
                transfer.save_ranges()
            return self._ack(where, AckStatus.MISSING, ranges=held)
        actual = transfer.hash_part(size)
        if (fin.size, fin.sha256) != (size, expected) or actual != expected:
            # Which side is wrong cannot be told from here; only a fresh copy of the bytes can help.
            log.warning(
                "recording %s: bytes hash to %s, fin says %d bytes %s, manifest %d bytes %s; bytes discarded",
                *(where.rec_id, actual, fin.size, fin.sha256, size, expected),
            )
            transfer.discard_data()
            return self._ack(where, AckStatus.MISSING)
        original = None
        if "parts" in transfer.manifest.ciphertext:
            try:
                original = self._split_original(transfer)
            except _Refused as exc:
                transfer.discard_data()
                return self._reject(where, str(exc))
        row = self._archive.store(transfer.manifest, transfer.manifest_doc, transfer.part, original)
        self._announce(row)
        self._forget(transfer)
        with self._stored:
            self._stored_count += 1
            self._stored.notify_all()
        return self._ack(where, AckStatus.STORED)

    def _split_original(self, transfer: Transfer) -> Path:
        """Cut the untrimmed original off the end of the received bytes into a file of its own."""
        assert transfer.manifest is not None
        target = transfer.directory / "original.part"
        try:
            split_original(transfer.part, transfer.manifest.ciphertext["parts"], target)
        except PartsError as exc:
            raise _Refused(str(exc)) from None
        return target

    # --- MQTT --------------------------------------------------------------------

    def start(self) -> None:
        """Connect to the broker (retrying in the background) and start handling messages."""
        if self._client is not None:
            return
        settings = self._broker
        try:
            client = settings.client(self._client_id)
        except BrokerSettingsError as exc:
            raise AgentError(str(exc)) from None
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client = client
        self._worker = threading.Thread(target=self._work, args=(client,), name="linerec-ingest", daemon=True)
        self._worker.start()
        client.connect_async(settings.host, settings.port, keepalive=settings.keepalive_s)
        client.loop_start()
        log.info("ingest connecting to %s as %s", settings.address, self._client_id)

    def stop(self) -> None:
        """Finish the messages already received, then disconnect."""
        client, worker = self._client, self._worker
        if client is None or worker is None:
            self._flush_ranges()
            return
        self._queue.put(None)
        worker.join()
        self._flush_ranges()
        client.disconnect()
        client.loop_stop()
        self._client = self._worker = None
        self._ready.clear()

    def _work(self, client: mqtt.Client) -> None:
        while (item := self._queue.get()) is not None:
            try:
                replies = self.handle(*item)
            except Exception:  # a bug must not stop the agent from taking the next recording
                log.exception("unexpected failure handling a message on %s", item[0])
                continue
            for topic, body in replies:
                info = client.publish(topic, body, qos=1)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    log.info("ack on %s not sent now (%s); the device will ask again", topic, info.rc)

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any) -> None:
        if reason.is_failure:
            log.error("broker %s refused the connection: %s", self._broker.address, reason)
            return
        log.info("connected to %s", self._broker.address)
        client.subscribe([(topic, 1) for topic in topics.AGENT_SUBSCRIPTIONS])

    def _on_subscribe(
        self, _client: mqtt.Client, _userdata: Any, _mid: int, reasons: list[ReasonCode], _props: Any
    ) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("broker %s refused the subscriptions: %s", self._broker.address, ", ".join(refused))
            return
        self._ready.set()

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        self._ready.clear()
        if reason.is_failure:
            log.warning("lost the broker %s (%s); reconnecting", self._broker.address, reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        with contextlib.suppress(UnicodeDecodeError):
            self._queue.put((message.topic, bytes(message.payload)))
