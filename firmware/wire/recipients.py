"""The archive recipients a device encrypts to, deployed by the agent: signed, versioned, monotonic.

When the archive's identity is rotated, the agent publishes (retained, QoS 1)
on ``linerec/<device>/recipients`` a document that tells one device which age
recipients to encrypt its next recordings to. Anyone who can publish on the
broker could publish such a document, so a device takes it only if

* it is signed with the agent's Ed25519 key, which the device pinned at
  enrolment (``[archive] agent_key``);
* it names this device (a document for another device is not replayed here);
* its sequence number is higher than the one the device holds (an older
  document, replayed, cannot roll a device back to a retired key);
* every recipient is an X25519 age recipient (``age1...``).

The document: ``{"format": "linerec-recipients/1", "body": "<text>",
"signature": "<base64>", "v": 1}``. ``body`` is the canonical JSON (sorted keys,
no spaces) of ``device_id``, ``seq``, ``issued_at`` and ``recipients``; the
signature covers ``linerec-recipients/1\\n`` followed by the body's bytes, so
it can never be taken for a signature over anything else.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from firmware.wire import age
from firmware.wire.errors import AgeError, SignatureError, WireError
from firmware.wire.messages import PROTOCOL_VERSION
from firmware.wire.topics import check_device_id

FORMAT = "linerec-recipients/1"
MAX_PAYLOAD = 16 * 1024
MAX_RECIPIENTS = 16
MAX_SEQ = 2**53 - 1  # exact in every JSON reader
_DOMAIN = FORMAT.encode() + b"\n"
_ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
_WHAT = "recipients message"


@dataclass(frozen=True, slots=True)
class RecipientList:
    """Which age recipients one device encrypts to from now on, and how new that order is."""

    device_id: str
    seq: int  # higher than every earlier list for this device
    issued_at: str  # ISO 8601 UTC, for people; the order is by ``seq``
    recipients: tuple[str, ...]

    def check(self) -> None:
        """WireError unless every field has the shape a device relies on."""
        check_device_id(self.device_id)
        if isinstance(self.seq, bool) or not isinstance(self.seq, int) or not 1 <= self.seq <= MAX_SEQ:
            msg = f"{_WHAT} has sequence {self.seq!r}; expected a whole number from 1 to {MAX_SEQ}"
            raise WireError(msg)
        if not isinstance(self.issued_at, str) or not _ISO_UTC.fullmatch(self.issued_at):
            msg = f"{_WHAT} has issued_at {self.issued_at!r}; expected an ISO 8601 UTC time ending in Z"
            raise WireError(msg)
        if not 1 <= len(self.recipients) <= MAX_RECIPIENTS:
            msg = f"{_WHAT} lists {len(self.recipients)} recipients; expected 1 to {MAX_RECIPIENTS}"
            raise WireError(msg)
        for recipient in self.recipients:
            if not isinstance(recipient, str) or recipient != recipient.strip():
                msg = f"{_WHAT} recipient {recipient!r} is not an age1... X25519 recipient"
                raise WireError(msg)
            try:
                age.parse_recipient(recipient)
            except AgeError:
                shown = recipient if len(recipient) <= 80 else recipient[:77] + "..."
                msg = f"{_WHAT} recipient {shown!r} is not an age1... X25519 recipient"
                raise WireError(msg) from None
        if len(set(self.recipients)) != len(self.recipients):
            msg = f"{_WHAT} lists a recipient twice"
            raise WireError(msg)

    def body(self) -> bytes:
        """The canonical bytes that are signed."""
        fields = {
            "device_id": self.device_id,
            "issued_at": self.issued_at,
            "recipients": list(self.recipients),
            "seq": self.seq,
        }
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def sign_recipients(recipients: RecipientList, key: Ed25519PrivateKey) -> bytes:
    """The document to publish: the list, checked, and the agent's signature over it."""
    recipients.check()
    body = recipients.body()
    doc = {
        "format": FORMAT,
        "body": body.decode(),
        "signature": base64.b64encode(key.sign(_DOMAIN + body)).decode(),
        "v": PROTOCOL_VERSION,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _document(payload: bytes) -> tuple[bytes, bytes]:
    """The body bytes and signature of a document, unverified."""
    if not payload:
        msg = f"{_WHAT} is empty (the retained message was cleared)"
        raise WireError(msg)
    if len(payload) > MAX_PAYLOAD:
        msg = f"{_WHAT} of {len(payload)} bytes is larger than the {MAX_PAYLOAD} allowed"
        raise WireError(msg)
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        msg = f"{_WHAT} is not a JSON document"
        raise WireError(msg) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        msg = f"{_WHAT} has format {got!r}; expected {FORMAT!r}"
        raise WireError(msg)
    if doc.get("v") != PROTOCOL_VERSION:
        msg = f"{_WHAT} has protocol version {doc.get('v')!r}; this side speaks {PROTOCOL_VERSION}"
        raise WireError(msg)
    body, signature = doc.get("body"), doc.get("signature")
    if not isinstance(body, str):
        msg = f"{_WHAT} has no body"
        raise WireError(msg)
    if signature is None or signature == "":
        msg = f"{_WHAT} is not signed"
        raise SignatureError(msg)
    try:
        raw = base64.b64decode(signature, validate=True) if isinstance(signature, str) else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 64:
        msg = f"{_WHAT} signature is not 64 bytes of base64"
        raise SignatureError(msg)
    return body.encode(), raw


def _fields(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except json.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict) or set(obj) != {"device_id", "issued_at", "recipients", "seq"}:
        msg = f"{_WHAT} body must hold exactly device_id, issued_at, recipients and seq"
        raise WireError(msg)
    if not isinstance(obj["device_id"], str) or not isinstance(obj["recipients"], list):
        msg = f"{_WHAT} body has a device_id that is not text or recipients that are not a list"
        raise WireError(msg)
    return obj


def read_recipients(payload: bytes, agent_key: Ed25519PublicKey, device_id: str) -> RecipientList:
    """The list in ``payload`` once it is signed by ``agent_key``, names ``device_id`` and is well formed.

    Raises SignatureError for an unsigned or forged document and WireError for
    anything else; the text says which check failed. The sequence number is the
    holder's to compare.
    """
    body, signature = _document(payload)
    try:
        agent_key.verify(signature, _DOMAIN + body)
    except InvalidSignature:
        msg = f"{_WHAT} signature does not verify against the pinned agent key (archive.agent_key)"
        raise SignatureError(msg) from None
    obj = _fields(body)
    if obj["device_id"] != device_id:
        msg = f"{_WHAT} is for device {obj['device_id']!r}, not this device {device_id!r}"
        raise WireError(msg)
    listed = RecipientList(
        device_id=obj["device_id"],
        seq=obj["seq"],
        issued_at=obj["issued_at"],
        recipients=tuple(obj["recipients"]),
    )
    listed.check()
    return listed
