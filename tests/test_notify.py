"""Notices and CRM webhooks: real SMTP and HTTP receivers, retries, restarts, and every bad setting."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import random
import sqlite3
import time
import tomllib
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from agent.archive import Archive, CallRow
from agent.errors import AgentError
from agent.notify import (
    Notifier,
    NotifyError,
    NotifySettings,
    OutboxError,
    RetryPolicy,
    WebhookSettings,
    archive_attacher,
    parse_notify,
    render_notice,
    sample_call,
)
from firmware.wire import age
from firmware.wire.errors import ConfigError
from firmware.wire.manifest import Manifest
from firmware.wire.signing import public_key_text
from tests.support.receivers import Hit, SmtpReceiver, WebhookReceiver, free_port

DEVICE = "pi-hall"
REC_ID = "20240701T130509000Z-0a1b2c3d"
NUMBER = "+442079460000"
NAME = "ALICE SMITH"
SECRET = b"crm-shared-secret-0123456789abcdef"
FAST = RetryPolicy(max_attempts=6, backoff_s=0.05, backoff_max_s=0.2)


def call_row(**changes: Any) -> dict[str, Any]:
    """An archive row of a two-minute answered call from Alice, as ``CallRow.to_json()`` gives it."""
    row = CallRow(
        id=REC_ID,
        device=DEVICE,
        line="line1",
        started_at="2024-07-01T13:05:09.000Z",
        answered_at="2024-07-01T13:05:20.000Z",
        ended_at="2024-07-01T13:07:25.000Z",
        duration_s=125.4,
        caller_number=NUMBER,
        caller_name=NAME,
        caller_absent=None,
        answered=True,
        hangup_cause="remote",
        ring_count=3,
        path="/archive/pi-hall/2024/07/01/x.flac.age",
        manifest_path="/archive/pi-hall/2024/07/01/x.manifest.age",
        size=1000,
        sha256="0" * 64,
        stored_at="2024-07-01T13:07:30.000Z",
    ).to_json()
    row.update(changes)
    return row


def hook(url: str, **changes: Any) -> WebhookSettings:
    values: dict[str, Any] = {"url": url, "secret": SECRET, "timeout_s": 2.0, "retry": FAST, **changes}
    return WebhookSettings(**values)


@pytest.fixture
def notifiers(tmp_path: Path) -> Iterator[Callable[..., Notifier]]:
    """Makes notifiers on ``tmp_path/outbox.sqlite`` (or a given outbox) and stops them all afterwards."""
    made: list[Notifier] = []

    def make(settings: NotifySettings, outbox: Path | None = None, **kwargs: Any) -> Notifier:
        notifier = Notifier(settings, outbox or tmp_path / "outbox.sqlite", **kwargs)
        made.append(notifier)
        return notifier

    yield make
    for notifier in made:
        notifier.stop(5)


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    server = SmtpReceiver()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def crm() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


def crm_accepts(hit: Hit, secret: bytes = SECRET) -> bool:
    """The check a CRM makes, written from the module's documentation of the scheme."""
    stamp = hit.headers.get("x-linerec-timestamp", "")
    signature = hit.headers.get("x-linerec-signature", "")
    if not stamp.isdigit() or abs(time.time() - int(stamp)) > 300 or not signature.startswith("sha256="):
        return False
    expected = hmac.new(secret, stamp.encode() + b"." + hit.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature.removeprefix("sha256="))


def everything_in(raw: bytes, message: EmailMessage) -> str:
    """A message as sent and as decoded: headers, every part's content, attachment names."""
    pieces = [raw.decode("utf-8", "replace"), *(str(value) for value in message.values())]
    for part in message.walk():
        if part.is_multipart():
            continue
        content = part.get_content()
        pieces += [content if isinstance(content, str) else content.decode("latin-1"), part.get_filename() or ""]
    return "\n".join(pieces)


class AudioMaker:
    """The attach callable the agent passes in: writes a known file into the temp folder it is given."""

    def __init__(self) -> None:
        self.data = random.Random(7).randbytes(30_000)
        self.made: list[Path] = []

    def __call__(self, rec_id: str, directory: Path) -> Path:
        path = directory / f"{rec_id}.flac"
        path.write_bytes(self.data)
        self.made.append(path)
        return path


# --- settings --------------------------------------------------------------------------


def load(tmp_path: Path, text: str) -> NotifySettings:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return parse_notify(tomllib.loads(text), path)


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "webhook.key"
    path.write_bytes(SECRET + b"\n")
    path.chmod(0o600)
    return path


def test_absent_tables_mean_nothing_is_sent(tmp_path: Path) -> None:
    settings = load(tmp_path, "[agent]\n")
    assert settings == NotifySettings()
    assert not settings.enabled
    assert settings.outbox_path(tmp_path) == tmp_path / "notify-outbox.sqlite"


def test_full_settings_are_read(tmp_path: Path, secret_file: Path) -> None:
    settings = load(
        tmp_path,
        """
[notify]
urls = ["mailto://127.0.0.1:2525?mode=insecure&from=a@example.org&to=b@example.org"]
events = ["missed"]
attach_audio = true
attach_format = "wav"
include_caller = false
timezone = "Europe/London"
outbox = "state/outbox.sqlite"
max_attempts = 3
backoff_s = 1.5

[[webhook]]
url = "https://crm.example.org/hooks/linerec"
secret_file = "webhook.key"
events = ["recording"]
timeout_s = 4
""",
    )
    assert settings.enabled
    assert settings.events == ("missed",)
    assert (settings.attach_audio, settings.attach_format, settings.include_caller) == (True, "wav", False)
    assert settings.timezone == "Europe/London"
    assert settings.outbox == tmp_path / "state" / "outbox.sqlite"
    assert settings.retry == RetryPolicy(max_attempts=3, backoff_s=1.5, backoff_max_s=3600)
    (webhook,) = settings.webhooks
    assert webhook.secret == SECRET
    assert webhook.events == ("recording",)
    assert webhook.timeout_s == 4
    assert webhook.label == "https://crm.example.org/hooks/linerec"
    assert SECRET.decode() not in repr(settings)


def webhook_table(extra: str = "", key_line: str = 'secret_file = "webhook.key"') -> str:
    return f'[[webhook]]\nurl = "https://crm.example.org/hook"\n{key_line}\n{extra}'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[notify]\nurls = "mailto://x"\n', "notify.urls is 'mailto://x'; expected a list"),
        ("[notify]\nurls = [5]\n", "notify.urls[0] is 5; expected a service URL as text"),
        (
            '[notify]\nurls = ["nosuch://user:pw@host/token"]\n',
            "notify.urls[0] is 'nosuch://...'; expected a URL of a service apprise knows, such as mailto:// or tgram://",
        ),
        (
            '[notify]\nurls = ["just text"]\n',
            "notify.urls[0] is \"a text without '://'\"; expected a URL of a service apprise knows,"
            " such as mailto:// or tgram://",
        ),
        (
            '[notify]\nurls = ["ntfy://topic1", "ntfy://topic1"]\n',
            "notify.urls[1] is 'ntfys://topic1'; expected each URL once",
        ),
        (
            '[notify]\nevents = ["recorded"]\n',
            "notify.events is ['recorded']; expected a non-empty list of 'recording', 'missed' without repeats",
        ),
        (
            "[notify]\nevents = []\n",
            "notify.events is []; expected a non-empty list of 'recording', 'missed' without repeats",
        ),
        (
            '[notify]\nevents = ["missed", "missed"]\n',
            "notify.events is ['missed', 'missed']; expected a non-empty list of 'recording', 'missed' without repeats",
        ),
        ('[notify]\nattach_audio = "yes"\n', "notify.attach_audio is 'yes'; expected true or false"),
        ('[notify]\nattach_format = "mp3"\n', "notify.attach_format is 'mp3'; expected one of 'flac', 'wav'"),
        ("[notify]\nattach_max_mb = 0\n", "notify.attach_max_mb is 0; expected an integer from 1 to 1024"),
        ('[notify]\ntimezone = "Mars/Olympus"\n', "notify.timezone is 'Mars/Olympus'; expected an IANA time zone"),
        ("[notify]\nmax_attempts = 0\n", "notify.max_attempts is 0; expected an integer from 1 to 100"),
        ("[notify]\nbackoff_s = -1\n", "notify.backoff_s is -1; expected a number from 0.01 to 3600"),
        (
            "[notify]\nbackoff_s = 60\nbackoff_max_s = 10\n",
            "notify.backoff_max_s is 10.0; expected a number no smaller than backoff_s (60)",
        ),
        ('[notify]\noutbox = ""\n', "notify.outbox is ''; expected a non-empty path"),
        ("[notify]\nurl = []\n", "notify.url is not a known setting; [notify] has attach_audio"),
        ('notify = "on"\n', "[notify] must be a table, not 'on'"),
        ('[webhook]\nurl = "https://x"\n', "webhook is {'url': 'https://x'}; expected an array of tables"),
        ('[[webhook]]\nsecret_file = "webhook.key"\n', "webhook[0].url is missing; it is required"),
        (
            '[[webhook]]\nurl = "ftp://crm.example.org/x"\nsecret_file = "webhook.key"\n',
            "webhook[0].url is 'ftp://crm.example.org/x'; expected an http:// or https:// URL with a host name",
        ),
        (
            '[[webhook]]\nurl = "https://:99999/x"\nsecret_file = "webhook.key"\n',
            "webhook[0].url is 'https://...'; expected an http:// or https:// URL with a host name",
        ),
        (
            '[[webhook]]\nurl = "https:///x"\nsecret_file = "webhook.key"\n',
            "webhook[0].url is 'https:///x'; expected an http:// or https:// URL with a host name",
        ),
        (webhook_table(key_line=""), "webhook[0].secret_file is missing; it is required (a file holding the HMAC key)"),
        (
            webhook_table(key_line='secret_file = "nowhere.key"'),
            "webhook[0].secret_file is '{tmp}/nowhere.key'; expected a readable file holding the HMAC key"
            " (No such file or directory)",
        ),
        (
            webhook_table(key_line='secret_file = "."'),
            "webhook[0].secret_file is '{tmp}'; expected a regular file holding the HMAC key",
        ),
        (
            webhook_table(key_line='secret_file = "short.key"'),
            "webhook[0].secret_file is '{tmp}/short.key'; expected a file holding 16 to 4096 bytes of secret",
        ),
        (
            webhook_table('events = ["test"]'),
            "webhook[0].events is ['test']; expected a non-empty list of 'recording', 'missed' without repeats",
        ),
        (webhook_table("timeout_s = 0"), "webhook[0].timeout_s is 0; expected a number from 0.1 to 300"),
        (webhook_table("max_attempts = 1000"), "webhook[0].max_attempts is 1000; expected an integer from 1 to 100"),
        (webhook_table('include_caller = "no"'), "webhook[0].include_caller is 'no'; expected true or false"),
        (
            webhook_table('ca_file = "webhook.key"'),
            "webhook[0].ca_file is '{tmp}/webhook.key'; expected a readable PEM file of certificate authorities",
        ),
        (webhook_table("secret = 1"), "webhook[0].secret is not a known setting; [webhook[0]] has"),
        (
            webhook_table() + "\n" + webhook_table(),
            "webhook[1].url is 'https://crm.example.org/hook'; expected each webhook URL once",
        ),
        ("webhook = [1]\n", "[webhook[0]] must be a table, not 1"),
    ],
)
def test_bad_setting_is_one_line_naming_key_value_and_what_is_allowed(
    tmp_path: Path, secret_file: Path, text: str, message: str
) -> None:
    (tmp_path / "short.key").write_bytes(b"too short\n")
    (tmp_path / "short.key").chmod(0o600)
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    text_of_error = str(caught.value)
    assert "\n" not in text_of_error
    assert text_of_error.startswith(f"{tmp_path / 'agent.toml'}: ")
    assert message.replace("{tmp}", str(tmp_path)) in text_of_error


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_secret_file_others_can_read_is_refused(tmp_path: Path, secret_file: Path, mode: int) -> None:
    secret_file.chmod(mode)
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, webhook_table())
    assert str(caught.value).endswith(
        f"webhook[0].secret_file is '{secret_file}'; expected a file only its owner can read"
        f" (it has mode {mode:04o}; chmod 600 it)"
    )
    assert SECRET.decode() not in str(caught.value)


def test_a_bad_url_error_shows_no_password(tmp_path: Path, secret_file: Path) -> None:
    text = '[[webhook]]\nurl = "gopher://crm:hunter2pw@crm.example.org/x?token=abc"\nsecret_file = "webhook.key"\n'
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert "hunter2pw" not in str(caught.value)
    assert "token=abc" not in str(caught.value)
    text = '[notify]\nurls = ["mailto://bob:hunter2pw@mail.example.org", "mailto://bob:hunter2pw@mail.example.org"]\n'
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert "expected each URL once" in str(caught.value)
    assert "hunter2pw" not in str(caught.value)


@given(
    failures=st.integers(1, 80),
    jitter=st.floats(0, 0.999),
    backoff=st.floats(0.01, 100),
    cap=st.floats(100, 5000),
)
def test_backoff_doubles_from_backoff_s_with_at_most_half_again_of_jitter_and_never_passes_the_cap(
    failures: int, jitter: float, backoff: float, cap: float
) -> None:
    policy = RetryPolicy(backoff_s=backoff, backoff_max_s=cap)
    delay = policy.delay(failures, jitter)
    base = min(cap, backoff * 2.0 ** (failures - 1))
    assert base <= delay * (1 + 1e-9)
    assert delay <= min(cap, base * 1.5) * (1 + 1e-9)
    assert policy.delay(failures + 1, jitter) >= delay


# --- what a notice says ----------------------------------------------------------------


def document(event: str = "recording", **changes: Any) -> dict[str, Any]:
    row = call_row(**changes)
    caller = {"number": row["caller_number"], "name": row["caller_name"], "absent": row["caller_absent"]}
    call = {k: row[k] for k in ("line", "started_at", "duration_s", "answered", "ring_count")}
    return {"event": event, "id": row["id"], "device": row["device"], "call": {**call, "caller": caller}}


def test_notice_gives_local_time_caller_duration_device_and_line() -> None:
    title, body = render_notice(document(), timezone="Europe/London")
    assert title == f"Call recorded: {NUMBER} ({NAME}), 2 min 05 s"
    assert body.splitlines() == [
        "Answered call, recorded.",
        "When: Mon 01 Jul 2024 14:05:09 BST",
        f"From: {NUMBER} ({NAME})",
        "Duration: 2 min 05 s",
        "Rings: 3",
        "Device: pi-hall, line line1",
        f"Recording: {REC_ID}",
    ]


def test_missed_call_notice_names_the_absence_reason_and_falls_back_to_utc() -> None:
    doc = document("missed", answered=False, duration_s=0.0, caller_number=None, caller_name=None, caller_absent="P")
    title, body = render_notice(doc)
    assert title == "Missed call from a withheld number"
    assert "When: Mon 01 Jul 2024 13:05:09 UTC" in body
    assert "Duration" not in body
    assert body.startswith("Missed call: it rang and was not answered.")


def test_a_time_the_device_gave_with_its_offset_is_kept() -> None:
    doc = document(started_at="2024-01-15T09:00:00+01:00")
    _, body = render_notice(doc, timezone="America/New_York")
    assert "When: Mon 15 Jan 2024 09:00:00 UTC+01:00" in body


# --- notices by e-mail -----------------------------------------------------------------


def mail_settings(smtp: SmtpReceiver, **changes: Any) -> NotifySettings:
    values: dict[str, Any] = {"urls": (smtp.url(),), "retry": FAST, "timezone": "Europe/London", **changes}
    return NotifySettings(**values)


def test_recording_notice_arrives_by_mail(smtp: SmtpReceiver, notifiers: Callable[..., Notifier]) -> None:
    notifier = notifiers(mail_settings(smtp))
    (delivery_id,) = notifier.enqueue("recording", call_row())
    notifier.start()
    assert notifier.drain(20)
    (message,) = smtp.wait(1)
    assert message["Subject"] == f"Call recorded: {NUMBER} ({NAME}), 2 min 05 s"
    assert message["To"] == "owner@example.org"
    text = message.get_body(preferencelist=("plain",))
    assert text is not None
    body = text.get_content()
    assert "When: Mon 01 Jul 2024 14:05:09 BST" in body
    assert f"From: {NUMBER} ({NAME})" in body
    assert list(message.iter_attachments()) == []
    (delivery,) = notifier.deliveries()
    assert (delivery.id, delivery.status, delivery.attempts, delivery.event) == (
        delivery_id,
        "delivered",
        1,
        "recording",
    )
    assert delivery.target.startswith("mailto://127.0.0.1:")


def test_attached_audio_arrives_byte_for_byte_and_its_temp_file_is_gone(
    smtp: SmtpReceiver, notifiers: Callable[..., Notifier]
) -> None:
    audio = AudioMaker()
    notifier = notifiers(mail_settings(smtp, attach_audio=True), attach=audio)
    notifier.enqueue("recording", call_row())
    notifier.start()
    assert notifier.drain(20)
    (message,) = smtp.wait(1)
    (attachment,) = message.iter_attachments()
    assert attachment.get_filename() == f"{REC_ID}.flac"
    assert attachment.get_content() == audio.data
    (made,) = audio.made
    assert not made.exists()
    assert not made.parent.exists()


@pytest.mark.parametrize(
    "case",
    [
        ("recording", {}, "Call recorded on pi-hall, 2 min 05 s"),
        ("missed", {"answered": False, "duration_s": 0.0}, "Missed call on pi-hall"),
    ],
)
def test_without_include_caller_the_number_and_name_appear_nowhere(
    smtp: SmtpReceiver, notifiers: Callable[..., Notifier], tmp_path: Path, case: tuple[str, dict[str, Any], str]
) -> None:
    event, changes, subject = case
    audio = AudioMaker()
    notifier = notifiers(mail_settings(smtp, attach_audio=True, include_caller=False), attach=audio)
    notifier.enqueue(event, call_row(**changes))
    notifier.start()
    assert notifier.drain(20)
    (message,) = smtp.wait(1)
    assert message["Subject"] == subject
    seen = everything_in(smtp.raw[0], message)
    assert REC_ID in seen
    for secret in (NUMBER, NUMBER.lstrip("+"), "2079460000", NAME, "ALICE"):
        assert secret not in seen
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("outbox.sqlite*"))
    assert REC_ID.encode() in stored
    assert NUMBER.encode() not in stored
    assert NAME.encode() not in stored


def test_archived_recording_is_decrypted_into_the_notice(
    smtp: SmtpReceiver, notifiers: Callable[..., Notifier], tmp_path: Path
) -> None:
    identity = age.generate_identity()
    plain = b"fLaC" + random.Random(3).randbytes(20_000)  # exported FLAC to FLAC is copied byte for byte
    ciphertext = age.encrypt_bytes(plain, [age.recipient_of(identity)])
    with Archive(tmp_path / "archive") as archive:
        archive.enrol(DEVICE, public_key_text(Ed25519PrivateKey.generate()))
        part = archive.incoming_dir / "audio.part"
        part.write_bytes(ciphertext)
        manifest = Manifest(
            recording_id=REC_ID,
            device_id=DEVICE,
            line="line1",
            started_at="2024-07-01T13:05:09.000Z",
            answered_at="2024-07-01T13:05:20.000Z",
            ended_at="2024-07-01T13:07:25.000Z",
            ring_count=2,
            answered=True,
            hangup_cause="remote",
            caller_id={"number": NUMBER, "name": NAME},
            consent=None,
            audio={"codec": "flac", "sample_rate": 8000, "duration_s": 125.0},
            ciphertext={"file": "x", "size": len(ciphertext), "sha256": hashlib.sha256(ciphertext).hexdigest()},
            firmware_version="0.1.0",
        )
        row = archive.store(manifest, b"sealed manifest", part)
        attach = archive_attacher(archive, [age.parse_identity(identity)], "flac")
        notifier = notifiers(mail_settings(smtp, attach_audio=True), attach=attach)
        assert len(notifier.notify_stored(row)) == 1
        notifier.start()
        assert notifier.drain(20)
    (message,) = smtp.wait(1)
    (attachment,) = message.iter_attachments()
    assert attachment.get_content() == plain
    assert message["Subject"] == f"Call recorded: {NUMBER} ({NAME}), 2 min 05 s"


def test_audio_that_cannot_be_made_is_left_out_and_the_notice_says_why(
    smtp: SmtpReceiver, notifiers: Callable[..., Notifier]
) -> None:
    def broken(rec_id: str, directory: Path) -> Path:
        msg = f"recording {rec_id!r} is not in the archive"
        raise AgentError(msg)

    notifier = notifiers(mail_settings(smtp, attach_audio=True), attach=broken)
    notifier.enqueue("recording", call_row())
    notifier.start()
    assert notifier.drain(20)
    (message,) = smtp.wait(1)
    assert list(message.iter_attachments()) == []
    text = message.get_body(preferencelist=("plain",))
    assert text is not None
    assert f"The audio could not be attached: recording '{REC_ID}' is not in the archive" in text.get_content()


def test_audio_over_the_size_limit_is_left_out(smtp: SmtpReceiver, notifiers: Callable[..., Notifier]) -> None:
    def big(rec_id: str, directory: Path) -> Path:
        path = directory / f"{rec_id}.flac"
        with path.open("wb") as f:
            f.truncate(1024 * 1024 + 1)
        return path

    notifier = notifiers(mail_settings(smtp, attach_audio=True, attach_max_mb=1), attach=big)
    notifier.enqueue("recording", call_row())
    notifier.start()
    assert notifier.drain(20)
    (message,) = smtp.wait(1)
    assert list(message.iter_attachments()) == []
    text = message.get_body(preferencelist=("plain",))
    assert text is not None
    assert "The audio (1.0 MB) is over attach_max_mb (1 MB), so it is not attached." in text.get_content()


def test_a_caller_name_off_the_line_cannot_add_mail_headers(
    smtp: SmtpReceiver, notifiers: Callable[..., Notifier]
) -> None:
    notifier = notifiers(mail_settings(smtp))
    notifier.enqueue("missed", call_row(answered=False, caller_name="EVIL\r\nBcc: victim@example.org\x07"))
    notifier.start()
    assert notifier.drain(20)
    (message,) = smtp.wait(1)
    assert " ".join(str(message["Subject"]).split()) == f"Missed call from {NUMBER} (EVIL Bcc: victim@example.org)"
    assert message["Bcc"] is None
    assert [line for line in smtp.raw[0].splitlines() if line.lower().startswith(b"bcc:")] == []
    text = message.get_body(preferencelist=("plain",))
    assert text is not None
    assert f"From: {NUMBER} (EVIL  Bcc: victim@example.org)" in text.get_content().splitlines()


def test_a_missed_call_notice_has_no_audio(smtp: SmtpReceiver, notifiers: Callable[..., Notifier]) -> None:
    audio = AudioMaker()
    notifier = notifiers(mail_settings(smtp, attach_audio=True), attach=audio)
    notifier.enqueue("missed", call_row(answered=False, duration_s=0.0))
    notifier.start()
    assert notifier.drain(20)
    (message,) = smtp.wait(1)
    assert message["Subject"] == f"Missed call from {NUMBER} ({NAME})"
    assert list(message.iter_attachments()) == []
    assert audio.made == []


def test_mail_server_down_ends_failed_and_is_kept(notifiers: Callable[..., Notifier]) -> None:
    down = SmtpReceiver()  # never started
    # One attempt: apprise spaces the sends to one service 5.5 s apart, which retries here would wait out.
    settings = NotifySettings(urls=(down.url(),), retry=RetryPolicy(max_attempts=1, backoff_s=0.05))
    notifier = notifiers(settings)
    notifier.enqueue("recording", call_row())
    notifier.start()
    assert notifier.drain(30)
    (delivery,) = notifier.deliveries("failed")
    assert delivery.attempts == 1
    assert delivery.last_error == "the service did not take the notice (the apprise log lines say why)"
    assert notifier.deliveries("delivered") == []


# --- webhooks --------------------------------------------------------------------------


def test_webhook_body_and_signature_verify_as_a_crm_would(
    crm: WebhookReceiver, notifiers: Callable[..., Notifier]
) -> None:
    notifier = notifiers(NotifySettings(webhooks=(hook(crm.url),)))
    (delivery_id,) = notifier.enqueue("recording", call_row())
    notifier.start()
    assert notifier.drain(10)
    (hit,) = crm.wait(1)
    assert hit.headers["content-type"] == "application/json"
    assert hit.headers["x-linerec-event"] == "recording"
    assert hit.headers["x-linerec-delivery"] == delivery_id
    assert crm_accepts(hit)
    doc = json.loads(hit.body)
    assert doc["event"] == "recording"
    assert (doc["id"], doc["device"]) == (REC_ID, DEVICE)
    assert doc["call"]["caller"] == {"number": NUMBER, "name": NAME, "absent": None}
    assert doc["call"]["duration_s"] == 125.4
    assert doc["call"]["answered"] is True
    assert "path" not in doc["call"]
    assert doc["sent_at"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(hit.headers["x-linerec-timestamp"])))


def test_a_forged_or_altered_request_fails_the_crm_check(
    crm: WebhookReceiver, notifiers: Callable[..., Notifier]
) -> None:
    notifier = notifiers(NotifySettings(webhooks=(hook(crm.url),)))
    notifier.enqueue("recording", call_row())
    notifier.start()
    assert notifier.drain(10)
    (hit,) = crm.wait(1)
    altered = hit.body.replace(NUMBER.encode(), b"+15550199")
    assert altered != hit.body
    assert not crm_accepts(Hit(path=hit.path, headers=hit.headers, body=altered, at=hit.at, answer=200))
    later = {**hit.headers, "x-linerec-timestamp": str(int(hit.headers["x-linerec-timestamp"]) + 1)}
    assert not crm_accepts(Hit(path=hit.path, headers=later, body=hit.body, at=hit.at, answer=200))
    assert not crm_accepts(hit, secret=b"another-secret-0123456789")
    forged = hmac.new(b"guess", hit.body, hashlib.sha256).hexdigest()
    assert not crm_accepts(
        Hit(
            path=hit.path,
            headers={**hit.headers, "x-linerec-signature": f"sha256={forged}"},
            body=hit.body,
            at=0,
            answer=0,
        )
    )


def test_server_errors_are_retried_with_the_same_delivery_id(notifiers: Callable[..., Notifier]) -> None:
    crm = WebhookReceiver(script=[500, 500, 200])
    crm.start()
    try:
        notifier = notifiers(NotifySettings(webhooks=(hook(crm.url),)))
        (delivery_id,) = notifier.enqueue("missed", call_row(answered=False, duration_s=0.0))
        notifier.start()
        assert notifier.drain(10)
        hits = crm.wait(3)
    finally:
        crm.stop()
    assert [h.answer for h in hits] == [500, 500, 200]
    assert {h.headers["x-linerec-delivery"] for h in hits} == {delivery_id}
    assert all(crm_accepts(h) for h in hits)
    (delivery,) = notifier.deliveries()
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("delivered", 3, None)


def test_a_reset_and_a_503_with_retry_after_are_retried_and_retry_after_is_honoured(
    notifiers: Callable[..., Notifier],
) -> None:
    crm = WebhookReceiver(script=["reset", (503, {"Retry-After": "1"}), 200])
    crm.start()
    try:
        notifier = notifiers(NotifySettings(webhooks=(hook(crm.url, retry=RetryPolicy(backoff_s=0.05)),)))
        notifier.enqueue("recording", call_row())
        notifier.start()
        assert notifier.drain(15)
        hits = crm.wait(3)
    finally:
        crm.stop()
    assert [h.answer for h in hits] == ["reset", (503, {"Retry-After": "1"}), 200]
    assert len({h.headers["x-linerec-delivery"] for h in hits}) == 1
    assert hits[2].at - hits[1].at >= 0.95  # backoff alone would have been 0.1 to 0.15 s
    (delivery,) = notifier.deliveries("delivered")
    assert delivery.attempts == 3


@pytest.mark.parametrize("status", [408, 429, 502, 504])
def test_these_answers_are_retried(notifiers: Callable[..., Notifier], status: int) -> None:
    crm = WebhookReceiver(script=[status, 204])
    crm.start()
    try:
        notifier = notifiers(NotifySettings(webhooks=(hook(crm.url),)))
        notifier.enqueue("recording", call_row())
        notifier.start()
        assert notifier.drain(10)
    finally:
        crm.stop()
    assert [h.answer for h in crm.hits] == [status, 204]
    assert notifier.deliveries()[0].status == "delivered"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, "it answered HTTP 400"),
        (401, "it answered HTTP 401"),
        (404, "it answered HTTP 404"),
        (410, "it answered HTTP 410"),
        (301, "it answered HTTP 301, a redirect: set the webhook url to the final address"),
    ],
)
def test_client_errors_fail_at_once_without_retries(
    notifiers: Callable[..., Notifier], status: int, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    crm = WebhookReceiver(script=[(status, {"Location": "http://127.0.0.1:1/elsewhere"}), 200])
    crm.start()
    try:
        notifier = notifiers(NotifySettings(webhooks=(hook(crm.url),)))
        notifier.enqueue("recording", call_row())
        notifier.start()
        assert notifier.drain(10)
    finally:
        crm.stop()
    assert len(crm.hits) == 1
    (delivery,) = notifier.deliveries()
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("failed", 1, error)
    assert f"gave up after 1 attempts: {error}; it stays in the outbox as failed" in caplog.text


def test_a_receiver_that_is_down_gets_the_call_when_it_comes_back(notifiers: Callable[..., Notifier]) -> None:
    crm = WebhookReceiver()  # not listening yet
    retry = RetryPolicy(max_attempts=100, backoff_s=0.02, backoff_max_s=0.05)
    notifier = notifiers(NotifySettings(webhooks=(hook(crm.url, retry=retry),)))
    (delivery_id,) = notifier.enqueue("recording", call_row())
    notifier.start()
    deadline = time.monotonic() + 10
    while notifier.deliveries()[0].attempts < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    (waiting,) = notifier.deliveries("pending")
    assert waiting.attempts >= 3
    assert waiting.last_error == "the request failed: Connection refused"
    crm.start()
    try:
        assert notifier.drain(10)
    finally:
        crm.stop()
    (hit,) = crm.hits
    assert hit.headers["x-linerec-delivery"] == delivery_id
    assert notifier.deliveries()[0].status == "delivered"


def test_pending_deliveries_survive_a_restart_and_go_out_exactly_once(
    tmp_path: Path, notifiers: Callable[..., Notifier]
) -> None:
    crm = WebhookReceiver()
    retry = RetryPolicy(max_attempts=100, backoff_s=0.02, backoff_max_s=0.05)
    settings = NotifySettings(webhooks=(hook(crm.url, retry=retry),))
    first = notifiers(settings)
    ids = first.enqueue("recording", call_row())
    ids += first.enqueue("missed", call_row(id="20240701T140000000Z-11223344", answered=False))
    first.start()
    assert not first.drain(0.3)
    assert first.stop(5)
    with pytest.raises(OutboxError, match="has been stopped"):
        first.enqueue("recording", call_row())

    second = notifiers(settings)
    assert [d.id for d in second.deliveries("pending")] == ids
    crm.start()
    try:
        second.start()
        assert second.drain(10)
        time.sleep(0.2)  # room for a duplicate to show up, if there were one
    finally:
        crm.stop()
    assert sorted(h.headers["x-linerec-delivery"] for h in crm.hits) == sorted(ids)
    assert all(crm_accepts(h) for h in crm.hits)


def test_enqueueing_the_same_recording_again_sends_it_once(
    crm: WebhookReceiver, notifiers: Callable[..., Notifier]
) -> None:
    notifier = notifiers(NotifySettings(webhooks=(hook(crm.url),)))
    first = notifier.enqueue("recording", call_row())
    assert notifier.enqueue("recording", call_row()) == first
    notifier.start()
    assert notifier.drain(10)
    assert len(crm.hits) == 1


def test_each_target_gets_only_the_events_it_asked_for_and_test_goes_to_all(
    crm: WebhookReceiver, smtp: SmtpReceiver, notifiers: Callable[..., Notifier]
) -> None:
    settings = NotifySettings(
        urls=(smtp.url(),), events=("recording",), retry=FAST, webhooks=(hook(crm.url, events=("missed",)),)
    )
    notifier = notifiers(settings)
    assert len(notifier.enqueue("recording", call_row())) == 1
    assert len(notifier.enqueue("missed", call_row(id="20240701T140000000Z-11223344", answered=False))) == 1
    assert len(notifier.enqueue("test", sample_call(DEVICE))) == 2
    queued = sorted((d.event, d.target.split(":")[0]) for d in notifier.deliveries("pending"))
    assert queued == [("missed", "http"), ("recording", "mailto"), ("test", "http"), ("test", "mailto")]


def test_a_test_event_reaches_the_crm_signed_and_marked_as_a_test(
    crm: WebhookReceiver, notifiers: Callable[..., Notifier]
) -> None:
    notifier = notifiers(NotifySettings(webhooks=(hook(crm.url, events=("missed",)),)))
    first = notifier.enqueue("test", sample_call(DEVICE))
    second = notifier.enqueue("test", sample_call(DEVICE))
    assert first != second  # each test is sent, even of the same made-up call
    notifier.start()
    assert notifier.drain(10)
    hits = crm.wait(2)
    assert [h.headers["x-linerec-event"] for h in hits] == ["test", "test"]
    assert all(crm_accepts(h) for h in hits)
    doc = json.loads(hits[0].body)
    assert (doc["event"], doc["device"], doc["call"]["caller"]["name"]) == ("test", DEVICE, "LINEREC TEST")
    assert render_notice(doc)[0] == "linerec test notice"
    assert render_notice(doc)[1].startswith("This is a test notice from linerec about a made-up call.")


def test_webhook_without_include_caller_sends_no_caller(
    crm: WebhookReceiver, notifiers: Callable[..., Notifier]
) -> None:
    notifier = notifiers(NotifySettings(webhooks=(hook(crm.url, include_caller=False),)))
    notifier.enqueue("recording", call_row())
    notifier.start()
    assert notifier.drain(10)
    (hit,) = crm.wait(1)
    assert "caller" not in json.loads(hit.body)["call"]
    assert NUMBER.encode() not in hit.body


def test_no_secret_reaches_the_logs(
    smtp: SmtpReceiver, notifiers: Callable[..., Notifier], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    crm = WebhookReceiver(script=[500, 200])
    crm.start()
    down = free_port()
    try:
        url = crm.url.replace("http://", "http://crm-user:hunter2pw@") + "?token=tok3nvalue"
        settings = NotifySettings(
            urls=(f"mailto://bob:mailpw77@127.0.0.1:{down}?mode=insecure&from=b@example.org&to=a@example.org",),
            retry=RetryPolicy(max_attempts=1, backoff_s=0.05),
            webhooks=(hook(url),),
        )
        notifier = notifiers(settings)
        notifier.enqueue("recording", call_row())
        notifier.start()
        assert notifier.drain(20)
    finally:
        crm.stop()
    assert [h.answer for h in crm.hits] == [500, 200]
    auth = crm.hits[0].headers["authorization"]
    assert base64.b64decode(auth.removeprefix("Basic ")) == b"crm-user:hunter2pw"
    assert crm.hits[0].path == "/hooks/linerec?token=tok3nvalue"
    mine = [r for r in caplog.records if r.name.startswith("linerec")]
    assert any("failed (attempt 1 of 6)" in r.getMessage() for r in mine)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in ("hunter2pw", "tok3nvalue", "mailpw77", SECRET.decode()):
        assert secret not in logged
    report = json.dumps([d.to_json() for d in notifier.deliveries()])
    for secret in ("hunter2pw", "tok3nvalue", "mailpw77"):
        assert secret not in report


# --- bad input to the notifier and its outbox -------------------------------------------


@pytest.mark.parametrize(
    ("event", "call", "message"),
    [
        ("called", call_row(), "event 'called' is not one of recording, missed, test"),
        ("recording", [1, 2], "a call must be a mapping of its fields, not list"),
        ("recording", call_row(id="../../etc"), "call field 'id' is '../../etc'; expected a recording id"),
        ("recording", call_row(id=None), "call field 'id' is None; expected a recording id"),
        ("recording", call_row(device="Pi Hall"), "call field 'device' is 'Pi Hall'; expected a device id"),
        ("recording", call_row(duration_s="long"), "call field 'duration_s' is 'long'; expected a number of seconds"),
        ("recording", call_row(duration_s=float("nan")), "call field 'duration_s' is nan; expected a number"),
        ("recording", call_row(duration_s=-3), "call field 'duration_s' is -3; expected a number of seconds of zero"),
        ("recording", call_row(answered=1), "call field 'answered' is 1; expected true or false"),
        ("recording", call_row(ring_count=True), "call field 'ring_count' is True; expected a count"),
        ("recording", call_row(started_at=None), "call field 'started_at' is None; expected an ISO 8601 time"),
        ("recording", call_row(caller_number=5550100), "call field 'caller_number' is 5550100; expected text"),
        ("recording", call_row(timezone="Nowhere/City"), "call field 'timezone' is 'Nowhere/City'; expected an IANA"),
        ("missed", call_row(line="x" * 500), None),
    ],
)
def test_bad_events_and_calls_are_refused_with_one_line(
    crm: WebhookReceiver, notifiers: Callable[..., Notifier], event: str, call: Any, message: str | None
) -> None:
    notifier = notifiers(NotifySettings(webhooks=(hook(crm.url),)))
    if message is None:
        assert len(notifier.enqueue(event, call)) == 1
        return
    with pytest.raises(NotifyError) as caught:
        notifier.enqueue(event, call)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert notifier.deliveries() == []


def test_asking_for_an_unknown_status_is_refused(notifiers: Callable[..., Notifier]) -> None:
    notifier = notifiers(NotifySettings())
    with pytest.raises(NotifyError, match="delivery status 'sent' is not one of pending, delivered, failed"):
        notifier.deliveries("sent")


def test_the_outbox_is_readable_by_its_owner_only(tmp_path: Path, notifiers: Callable[..., Notifier]) -> None:
    notifiers(NotifySettings(), tmp_path / "state" / "outbox.sqlite")
    assert (tmp_path / "state" / "outbox.sqlite").stat().st_mode & 0o077 == 0


def test_a_file_that_is_not_an_outbox_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "outbox.sqlite"
    bad.write_bytes(b"this is not a database, just some bytes " * 100)
    with pytest.raises(OutboxError) as caught:
        Notifier(NotifySettings(), bad)
    assert str(caught.value) == f"cannot open the notification outbox {bad}: file is not a database"
    with pytest.raises(OutboxError, match=r"Is a directory|unable to open"):
        Notifier(NotifySettings(), tmp_path)


def test_an_archive_index_or_other_sqlite_file_is_not_taken_for_an_outbox(tmp_path: Path) -> None:
    with Archive(tmp_path / "archive"):
        pass
    index = tmp_path / "archive" / "index.sqlite"
    before = index.read_bytes()
    with pytest.raises(OutboxError) as caught:
        Notifier(NotifySettings(), index)
    assert str(caught.value) == f"cannot open the notification outbox {index}: it is an SQLite file of something else"
    assert index.read_bytes() == before
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    with pytest.raises(OutboxError, match="it is an SQLite file of something else"):
        Notifier(NotifySettings(), other)


def test_an_outbox_from_a_newer_agent_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    Notifier(NotifySettings(), path).stop()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 9")
    with pytest.raises(OutboxError) as caught:
        Notifier(NotifySettings(), path)
    assert str(caught.value) == (
        f"cannot open the notification outbox {path}: it has schema version 9; this agent knows versions up to 1"
    )


def test_a_tampered_entry_fails_alone_and_the_rest_are_delivered(
    tmp_path: Path, crm: WebhookReceiver, notifiers: Callable[..., Notifier]
) -> None:
    settings = NotifySettings(webhooks=(hook(crm.url),))
    first = notifiers(settings)
    bad_id, good_id = (
        first.enqueue("recording", call_row())[0],
        first.enqueue("missed", call_row(id="20240701T140000000Z-11223344", answered=False))[0],
    )
    first.stop()
    with sqlite3.connect(tmp_path / "outbox.sqlite") as db:
        db.execute('UPDATE deliveries SET payload = \'{"event": "recording", "call": 5\' WHERE id = ?', (bad_id,))
    second = notifiers(settings)
    second.start()
    assert second.drain(10)
    statuses = {d.id: (d.status, d.last_error) for d in second.deliveries()}
    assert statuses == {
        bad_id: ("failed", "its stored document is not readable"),
        good_id: ("delivered", None),
    }
    assert [h.headers["x-linerec-delivery"] for h in crm.hits] == [good_id]


def test_an_attempt_cut_short_counts_and_the_last_one_ends_failed(
    tmp_path: Path, crm: WebhookReceiver, notifiers: Callable[..., Notifier]
) -> None:
    settings = NotifySettings(webhooks=(hook(crm.url, retry=RetryPolicy(max_attempts=3, backoff_s=0.05)),))
    first = notifiers(settings)
    (cut_id,) = first.enqueue("recording", call_row())
    first.stop()
    # What the outbox holds when the process died during the third and last attempt.
    with sqlite3.connect(tmp_path / "outbox.sqlite") as db:
        db.execute("UPDATE deliveries SET attempts = 3, last_error = 'it answered HTTP 503' WHERE id = ?", (cut_id,))
    second = notifiers(settings)
    second.start()
    assert second.drain(10)
    (delivery,) = second.deliveries()
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("failed", 3, "it answered HTTP 503")
    assert crm.hits == []


def test_a_pending_entry_whose_target_was_removed_fails_with_a_reason(
    crm: WebhookReceiver, notifiers: Callable[..., Notifier]
) -> None:
    first = notifiers(NotifySettings(webhooks=(hook(crm.url + "/old"),)))
    first.enqueue("recording", call_row())
    first.stop()
    second = notifiers(NotifySettings(webhooks=(hook(crm.url),)))
    second.start()
    assert second.drain(10)
    (delivery,) = second.deliveries()
    assert (delivery.status, delivery.last_error) == ("failed", "its target is no longer in the settings")
    assert delivery.target == crm.url + "/old"
    assert crm.hits == []


def test_old_delivered_entries_are_pruned_and_failed_ones_kept(
    crm: WebhookReceiver, notifiers: Callable[..., Notifier]
) -> None:
    crm.script.extend([200, 400])
    settings = NotifySettings(keep_delivered_days=30, webhooks=(hook(crm.url),))
    first = notifiers(settings)
    first.enqueue("recording", call_row())
    first.enqueue("missed", call_row(id="20240701T140000000Z-11223344", answered=False))
    first.start()
    assert first.drain(10)
    first.stop()
    later = notifiers(settings, clock=lambda: time.time() + 31 * 86400)
    later.start()
    assert [d.status for d in later.deliveries()] == ["failed"]
