"""Deployed recipients: through a real mosquitto to a real Uplink and RecipientStore, and against hostile bytes.

``linerec-agent keys deploy`` publishes the current recipient, signed; the
device takes it for its next recording, never the one in progress, and
ignores, with one log line each, whatever a stranger on the broker publishes.
"""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from agent.keyring import load_identities, signing_key
from agent.rewrap import files_of, headers
from firmware.calls import Call, CallState, HangupCause
from firmware.recipients import STORE_NAME, RecipientStore
from firmware.recorder import CallRecorder
from firmware.spool import Spool
from firmware.uplink import Uplink
from firmware.wire import age, topics
from firmware.wire.errors import LinerecError, WireError
from firmware.wire.recipients import FORMAT, RecipientList, read_recipients, sign_recipients
from tests.support.broker import Mosquitto
from tests.support.device_calls import RATE, T0, deliver, ramp
from tests.test_keys import DEVICE, Station, make_station, rotate

# --- deployment to devices -------------------------------------------------------------------------


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def deployed(
    tmp_path: Path, mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> Iterator[tuple[Station, RecipientStore, Uplink]]:
    s = make_station(tmp_path, mosquitto)
    assert s.run("keys", "show-agent") == 0
    agent_key = capsys.readouterr().out.split('"')[1]
    s.device = replace(
        s.device, config=replace(s.device.config, archive=replace(s.device.config.archive, agent_key=agent_key))
    )
    store = RecipientStore.for_config(s.device.config)
    uplink = Uplink(
        device_id=DEVICE, spool=Spool(tmp_path / "uplink-spool"), broker=mosquitto.settings, on_recipients=store.offer
    )
    uplink.start()
    try:
        wait_until(lambda: uplink.connected, "the uplink to connect")
        yield s, store, uplink
    finally:
        uplink.stop()


def test_deployed_recipients_reach_the_device_and_its_next_recording_but_not_the_one_in_progress(
    deployed: tuple[Station, RecipientStore, Uplink], capsys: pytest.CaptureFixture[str], mosquitto: Mosquitto
) -> None:
    s, store, _uplink = deployed
    new = rotate(s, capsys)

    in_progress = CallRecorder(config=s.device.config, spool=s.device.spool, signing_key=s.device.key, sample_rate=RATE)
    in_progress.start(T0 + 500)
    in_progress.write(ramp(RATE))

    escrow = age.recipient_of(age.generate_identity())
    assert s.run("keys", "deploy", "--also", escrow) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"deployed {age.recipient_of(new)}, {escrow} to {DEVICE} (sequence ")
    seq = int(line.rsplit(" ", 1)[1].rstrip(")\n"))
    wait_until(lambda: store.seq() == seq, "the device to take the deployment")
    assert store.current() == (age.recipient_of(new), escrow)
    assert (s.device.config.device.state_dir / STORE_NAME).is_file()
    assert store.facts() == {
        "recipients_source": "deployed",
        "recipients_seq": seq,
        "recipients": [age.recipient_of(new), escrow],
        "recipients_refused": None,
    }
    with pytest.raises(LinerecError, match=r"^recipients message recipient 'age1nope' is not an age1\.\.\. X25519"):
        s.run("keys", "deploy", "--also", "age1nope")

    call = Call(CallState.ENDED, answered_at=T0 + 500, ended_at=T0 + 501, hangup_cause=HangupCause.LOCAL_ONHOOK)
    old_id = in_progress.finish(call)
    next_id = s.device.record(ramp(RATE, 3), t0=T0 + 600)
    with s.archive() as archive:
        deliver(s.device, archive, load_identities(s.cfg))
        old_row, next_row = archive.get(old_id), archive.get(next_id)
    new_key, old_key = age.parse_identity(new), age.parse_identity(s.first)
    for role, path in files_of(old_row):
        assert headers(path)[0].opens_with(old_key) and not headers(path)[0].opens_with(new_key), role
    for role, path in files_of(next_row):
        [header] = headers(path)
        assert header.opens_with(new_key) and not header.opens_with(old_key), role
        assert len(header.stanzas) == 2, "the escrow recipient too"

    # A device restarting reads the deployment from its state folder; the retained copy changes nothing.
    again = RecipientStore.for_config(s.device.config)
    assert again.current() == (age.recipient_of(new), escrow)
    assert again.offer(store.path.read_bytes()) is False
    assert again.last_refusal is None


def publish_retained(mosquitto: Mosquitto, topic: str, payload: bytes) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="intruder")
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def signed(fields: dict[str, object], key: Ed25519PrivateKey, **outer: object) -> bytes:
    """A recipients document as the agent would sign it, with ``outer`` fields replaced."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    signature = base64.b64encode(key.sign(FORMAT.encode() + b"\n" + text.encode())).decode()
    doc = {"format": FORMAT, "body": text, "signature": signature, "v": 1, **outer}
    return json.dumps(doc, separators=(",", ":")).encode()


def logged(caplog: pytest.LogCaptureFixture, reason: str) -> bool:
    return any(r.getMessage().endswith(reason) for r in caplog.records)


def test_forged_foreign_replayed_garbage_and_unsigned_recipients_are_each_ignored_with_one_line(
    deployed: tuple[Station, RecipientStore, Uplink],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    mosquitto: Mosquitto,
) -> None:
    s, store, _uplink = deployed
    rotate(s, capsys)
    assert s.run("keys", "deploy", "--device", DEVICE) == 0
    seq = int(capsys.readouterr().out.rsplit(" ", 1)[1].rstrip(")\n"))
    wait_until(lambda: store.seq() == seq, "the genuine deployment")
    held = store.current()
    agent = signing_key(s.paths)
    body = {"device_id": DEVICE, "seq": seq + 10, "issued_at": "2030-01-01T00:00:00.000Z", "recipients": list(held)}
    attacker = age.recipient_of(age.generate_identity())
    hostile = [
        (
            signed({**body, "recipients": [attacker]}, Ed25519PrivateKey.generate()),
            "recipients message signature does not verify against the pinned agent key (archive.agent_key)",
        ),
        (
            signed({**body, "device_id": "pi-other"}, agent),
            f"recipients message is for device 'pi-other', not this device '{DEVICE}'",
        ),
        (
            signed({**body, "seq": seq - 1}, agent),
            f"recipients message has sequence {seq - 1}, not newer than the {seq} held (an old message replayed?)",
        ),
        (
            signed({**body, "recipients": ["age1garbage"]}, agent),
            "recipients message recipient 'age1garbage' is not an age1... X25519 recipient",
        ),
        (
            json.dumps({"format": FORMAT, "body": json.dumps({**body, "recipients": [attacker]}), "v": 1}).encode(),
            "recipients message is not signed",
        ),
        (b"\x00\xffnot json", "recipients message is not a JSON document"),
    ]
    caplog.set_level(logging.WARNING, logger="linerec.recipients")
    for payload, reason in hostile:
        caplog.clear()
        for _ in range(2):  # the same message twice: logged once
            publish_retained(mosquitto, topics.recipients(DEVICE), payload)
        wait_until(partial(logged, caplog, reason), reason)
        time.sleep(0.2)  # time for the second copy to arrive, and not be logged
        lines = [r.getMessage() for r in caplog.records if r.name == "linerec.recipients"]
        assert lines == [f"ignored a recipients message: {reason}"]
        assert store.current() == held
        assert store.seq() == seq
        assert store.last_refusal == reason


def test_a_device_without_an_agent_key_ignores_deployments_and_says_so_once(
    tmp_path: Path, mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    s = make_station(tmp_path, mosquitto)
    store = RecipientStore.for_config(s.device.config)
    assert not store.enabled
    uplink = Uplink(
        device_id=DEVICE, spool=Spool(tmp_path / "uplink-spool"), broker=mosquitto.settings, on_recipients=store.offer
    )
    caplog.set_level(logging.WARNING, logger="linerec.recipients")
    uplink.start()
    try:
        rotate(s, capsys)
        assert s.run("keys", "deploy") == 0
        assert s.run("keys", "deploy") == 0
        expected = (
            "ignoring recipients deployed by the agent: archive.agent_key is not set,"
            " so recordings stay encrypted to archive.recipients"
        )
        wait_until(lambda: any(r.getMessage() == expected for r in caplog.records), "the notice")
        time.sleep(0.2)
        assert [r.getMessage() for r in caplog.records if r.name == "linerec.recipients"] == [expected]
    finally:
        uplink.stop()
    assert store.current() == (age.recipient_of(s.first),)
    assert not (s.device.config.device.state_dir / STORE_NAME).exists()


def test_a_stored_deployment_that_no_longer_verifies_is_not_used(
    deployed: tuple[Station, RecipientStore, Uplink],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    s, store, _uplink = deployed
    rotate(s, capsys)
    assert s.run("keys", "deploy") == 0
    wait_until(lambda: store.seq() is not None, "the deployment")
    other_key = f"ed25519:{base64.b64encode(Ed25519PrivateKey.generate().public_key().public_bytes_raw()).decode()}"
    moved = replace(s.device.config, archive=replace(s.device.config.archive, agent_key=other_key))
    caplog.set_level(logging.ERROR, logger="linerec.recipients")
    stranger = RecipientStore.for_config(moved)
    assert stranger.current() == (age.recipient_of(s.first),)
    assert stranger.current() == (age.recipient_of(s.first),)
    [message] = [r.getMessage() for r in caplog.records]
    assert message == (
        f"the stored recipients in {store.path} are not used: recipients message signature does not verify against"
        " the pinned agent key (archive.agent_key); using archive.recipients"
    )
    # Edited by hand on the device: a higher sequence under the old signature.
    data = json.loads(store.path.read_bytes())
    data["body"] = data["body"].replace('"seq":', '"seq":1')
    store.path.write_text(json.dumps(data))
    caplog.clear()
    assert RecipientStore.for_config(s.device.config).current() == (age.recipient_of(s.first),)
    assert [r.getMessage() for r in caplog.records] == [
        f"the stored recipients in {store.path} are not used: recipients message signature does not verify against"
        " the pinned agent key (archive.agent_key); using archive.recipients"
    ]


def test_deploying_to_a_device_that_is_not_enrolled_or_without_a_broker_is_one_clear_error(tmp_path: Path) -> None:
    s = make_station(tmp_path)
    with pytest.raises(LinerecError, match=r"^device 'pi-nowhere' is not enrolled; enrolled: pi-test$"):
        s.run("keys", "deploy", "--device", "pi-nowhere")
    from tests.support.broker import free_port  # noqa: PLC0415

    s.cfg = replace(s.cfg, mqtt=replace(s.cfg.mqtt, port=free_port()))
    with pytest.raises(LinerecError, match=r"^cannot connect to the broker at localhost:\d+: Connection refused$"):
        s.run("keys", "deploy", "--timeout", "2")
    with sqlite3.connect(s.cfg.agent.database_path) as db:
        assert db.execute("SELECT COUNT(*) FROM deployments").fetchone() == (0,)


# --- the message itself, against hostile bytes ----------------------------------------------------------

AGENT = Ed25519PrivateKey.generate()
GOOD_BODY: dict[str, object] = {
    "device_id": DEVICE,
    "seq": 7,
    "issued_at": "2030-01-01T00:00:00.000Z",
    "recipients": [age.recipient_of(age.generate_identity())],
}


def test_a_signed_list_reads_back_as_it_was_made() -> None:
    listed = RecipientList(DEVICE, 7, "2030-01-01T00:00:00.000Z", tuple(GOOD_BODY["recipients"]))  # type: ignore[arg-type]
    payload = sign_recipients(listed, AGENT)
    assert read_recipients(payload, AGENT.public_key(), DEVICE) == listed
    assert payload == signed(GOOD_BODY, AGENT)


RECIPIENT = str(GOOD_BODY["recipients"][0])  # type: ignore[index]
SEQ_RANGE = "expected a whole number from 1 to 9007199254740991"
BAD_DOCUMENTS = [
    (b"", "recipients message is empty (the retained message was cleared)"),
    (b"x" * 16385, "recipients message of 16385 bytes is larger than the 16384 allowed"),
    (b"[1, 2]", "recipients message has format 'list'; expected 'linerec-recipients/1'"),
    (b'{"format": "v0"}', "recipients message has format 'v0'; expected 'linerec-recipients/1'"),
    (signed(GOOD_BODY, AGENT, v=2), "recipients message has protocol version 2; this side speaks 1"),
    (signed(GOOD_BODY, AGENT, body=7), "recipients message has no body"),
    (signed(GOOD_BODY, AGENT, signature="!!"), "recipients message signature is not 64 bytes of base64"),
    (signed(GOOD_BODY, AGENT, signature="AAAA"), "recipients message signature is not 64 bytes of base64"),
    (signed(GOOD_BODY, AGENT, signature=None), "recipients message is not signed"),
]
BAD_BODIES: list[tuple[dict[str, object], str]] = [
    ({"extra": 1}, "recipients message body must hold exactly device_id, issued_at, recipients and seq"),
    ({"seq": True}, f"recipients message has sequence True; {SEQ_RANGE}"),
    ({"seq": 0}, f"recipients message has sequence 0; {SEQ_RANGE}"),
    ({"seq": 2**60}, f"recipients message has sequence {2**60}; {SEQ_RANGE}"),
    ({"seq": 7.5}, f"recipients message has sequence 7.5; {SEQ_RANGE}"),
    ({"issued_at": "now"}, "recipients message has issued_at 'now'; expected an ISO 8601 UTC time ending in Z"),
    ({"recipients": "age1x"}, "recipients message body has a device_id that is not text or recipients that are not"),
    ({"recipients": []}, "recipients message lists 0 recipients; expected 1 to 16"),
    ({"recipients": [RECIPIENT] * 2}, "recipients message lists a recipient twice"),
    ({"recipients": [5]}, "recipients message recipient 5 is not an age1... X25519 recipient"),
    ({"recipients": [" " + RECIPIENT]}, f"recipients message recipient ' {RECIPIENT}' is not an age1... X25519"),
    ({"recipients": ["age1" + "q" * 500]}, "recipients message recipient 'age1qqqqq"),
    ({"device_id": "../etc"}, "recipients message is for device '../etc', not this device 'pi-test'"),
]


@pytest.mark.parametrize(
    ("payload", "message"),
    BAD_DOCUMENTS + [(signed({**GOOD_BODY, **change}, AGENT), message) for change, message in BAD_BODIES],
)
def test_a_bad_recipients_message_is_refused_with_the_check_it_failed(payload: bytes, message: str) -> None:
    with pytest.raises(WireError) as info:
        read_recipients(payload, AGENT.public_key(), DEVICE)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)
    assert len(str(info.value)) < 200


@given(st.binary(max_size=600) | st.text(max_size=300).map(str.encode))
def test_any_bytes_on_the_topic_are_refused_with_a_wire_error(data: bytes) -> None:
    with pytest.raises(WireError):
        read_recipients(data, AGENT.public_key(), DEVICE)


@given(
    st.dictionaries(
        st.sampled_from(["device_id", "seq", "issued_at", "recipients", "x"]),
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.text(max_size=20)
        | st.lists(st.text(max_size=70), max_size=3),
    )
)
def test_any_signed_body_is_read_or_refused_with_a_wire_error(body: dict[str, object]) -> None:
    try:
        listed = read_recipients(signed(body, AGENT), AGENT.public_key(), DEVICE)
    except WireError:
        return
    assert listed.device_id == DEVICE
