"""The review web app, running for real: uvicorn on a free loopback port, over an archive of playable calls.

The calls are real: a few seconds of tones and noise encoded as FLAC by
libsndfile, age-encrypted to the archive identity, with a manifest signed by
the device key (trim map, VAD speech, a keypad digit, consent evidence) and
stored through ``Archive.store`` as ingest would; Chromium can play them.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPResponse
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import soundfile as sf
import uvicorn

from agent import config
from agent.archive import Archive
from agent.web.app import create_app, open_context
from agent.web.cli_users import users_path
from agent.web.live import LiveStatus
from agent.web.users import UserStore
from firmware.wire import age
from firmware.wire.broker import BrokerSettings
from firmware.wire.manifest import Manifest, sign_manifest
from tests.support.broker import free_port
from tests.support.device_calls import identity_file
from tests.support.studio import CONSENT, Studio, iso, rec_id

RATE = 8000
PASSWORD = "correct horse battery"  # noqa: S105  (the test users' password)
USERS = {"ada": "admin", "rita": "reviewer", "otto": "auditor"}
# The call as captured: 7 s; the trim cut 2.0-3.0 s away, so the recording plays 6 s.
TRIM_MAP = [[0.0, 2.0], [3.0, 7.0]]
SPEECH = [[0.3, 1.8], [3.4, 6.6]]
DTMF = [{"digit": "5", "start_s": 4.0, "end_s": 4.12}]
NOTICE_CONSENT = {**CONSENT, "notices": [{**CONSENT["notices"][0], "offset_s": 0.5, "duration_s": 1.0}]}


def tone_call(seconds: float, seed: int) -> np.ndarray[Any, np.dtype[np.int16]]:
    """Speech-like audio: bursts of a tone with a little noise, loud enough to see in the waveform."""
    t = np.arange(round(seconds * RATE)) / RATE
    rng = np.random.default_rng(seed)
    gate = (np.sin(2 * np.pi * 0.7 * t) > -0.3).astype(float)
    signal = 0.5 * np.sin(2 * np.pi * (300 + 40 * seed) * t) * gate + 0.02 * rng.standard_normal(len(t))
    return (signal * 32767).astype(np.int16)


def flac_bytes(samples: np.ndarray[Any, np.dtype[np.int16]]) -> bytes:
    """The samples as a FLAC file."""
    out = io.BytesIO()
    sf.write(out, samples, RATE, format="FLAC", subtype="PCM_16")
    return out.getvalue()


def store_playable(studio: Studio, rid: str, *, seed: int, number: str, name: str | None, seconds: float = 6.0) -> None:
    """A 6-second answered call with playable FLAC audio and a manifest with marks."""
    audio = age.encrypt_bytes(flac_bytes(tone_call(seconds, seed)), [studio.recipient])
    started = iso(rid)
    manifest = Manifest(
        recording_id=rid,
        device_id=studio.device,
        line="line1",
        started_at=started,
        answered_at=started,
        ended_at=started,
        ring_count=2,
        answered=True,
        hangup_cause="remote",
        caller_id={"number": number, "name": name, "number_absent": None, "name_absent": None},
        consent=NOTICE_CONSENT,
        audio={
            "codec": "flac",
            "container": "age",
            "sample_rate": RATE,
            "duration_s": seconds + 1.0,
            "trimmed_duration_s": seconds,
            "trimmed": True,
            "trim_map": TRIM_MAP,
            "speech": SPEECH,
            "dtmf": DTMF,
        },
        ciphertext={"file": "audio.age", "size": len(audio), "sha256": hashlib.sha256(audio).hexdigest()},
        firmware_version="0.1.0",
    )
    doc = age.encrypt_bytes(sign_manifest(manifest, studio.key), [studio.recipient])
    part = studio.archive.incoming_dir / f"{rid}.part"
    part.write_bytes(audio)
    studio.archive.store(manifest, doc, part)


@dataclass
class Site:
    """The running app: its address, config, the calls in its archive, and an HTTP client for tests."""

    host: str
    port: int
    cfg: config.AgentConfig
    calls: dict[str, str]  # what -> recording id
    root: Path
    cookies: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        form: dict[str, str] | None = None,
        cookies: dict[str, str] | None = None,
    ) -> tuple[HTTPResponse, bytes]:
        """One request, raw path as given (no normalisation), with these cookies; the answer and its body."""
        conn = HTTPConnection(self.host, self.port, timeout=30)
        sent = dict(headers or {})
        jar = self.cookies if cookies is None else cookies
        if jar:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        body = None
        if form is not None:
            body = urlencode(form).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=sent)
        answer = conn.getresponse()
        data = answer.read()
        conn.close()
        return answer, data

    def sign_in(self, name: str, password: str = PASSWORD) -> tuple[HTTPResponse, dict[str, str]]:
        """Sign in through the form as a browser would; the answer and the cookies it set."""
        answer, _ = self.request("GET", "/login", cookies={})
        login = cookie_values(answer)
        answer, _ = self.request(
            "POST",
            "/login",
            form={"csrf": login["linerec_login"], "name": name, "password": password},
            cookies=login,
        )
        return answer, cookie_values(answer)


def cookie_values(answer: HTTPResponse) -> dict[str, str]:
    """The cookies an answer sets (deleted ones left out)."""
    jar: dict[str, str] = {}
    for header in answer.headers.get_all("set-cookie") or []:
        parsed: SimpleCookie = SimpleCookie()
        parsed.load(header)
        for key, morsel in parsed.items():
            if morsel.value and morsel.value != '""':
                jar[key] = morsel.value
    return jar


def write_config(root: Path, broker: BrokerSettings | None = None) -> Path:
    """An agent.toml for a site under ``root`` (plain-HTTP cookies, for loopback), following ``broker`` if given."""
    identity_file(root / "identity.txt")
    path = root / "agent.toml"
    path.write_text(
        f"""[agent]
identity = "{root / "identity.txt"}"
archive_dir = "{root / "state" / "archive"}"

[web]
cookie_secure = false
lockout_s = 600
max_failures = 3
page_size = 5
live_status = {"true" if broker is not None else "false"}
"""
        + (f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n' if broker is not None else "")
    )
    return path


def fill_archive(cfg: config.AgentConfig) -> dict[str, str]:
    """The site's calls: three playable ones, two missed ones, and enough rows for a second page."""
    archive = Archive(cfg.agent.archive_dir, cfg.agent.database_path)
    identity = (cfg.agent.identity.read_text().splitlines())[-1]
    studio = Studio(archive, identity=identity)
    calls = {
        "acme": rec_id(5, 9, 1),
        "bakery": rec_id(5, 11, 2),
        "clinic": rec_id(6, 10, 3),
    }
    store_playable(studio, calls["acme"], seed=1, number="2125550142", name="ACME PLUMBING")
    store_playable(studio, calls["bakery"], seed=2, number="4155550100", name="BAKERY")
    store_playable(studio, calls["clinic"], seed=3, number="6175550199", name=None)
    for n in range(6):
        studio.store(rec_id(1, 8 + n, 10 + n), number=f"30355501{n:02d}", name=None, answered=False)
    archive.note_status(studio.device, {"state": "online", "spool_depth": 2, "disk_free_bytes": 12_500_000_000})
    archive.close()
    return calls


@contextmanager
def running_site(root: Path, broker: BrokerSettings | None = None) -> Iterator[Site]:
    """The app serving a fresh archive under ``root`` until the block ends (following ``broker``'s statuses)."""
    cfg = config.load(write_config(root, broker))
    calls = fill_archive(cfg)
    with UserStore(users_path(cfg)) as users:
        for name, role in USERS.items():
            users.add(name, role, PASSWORD)
    ctx = open_context(cfg)
    if cfg.web.live_status:
        ctx.live = LiveStatus(cfg.mqtt, "linerec-web-test")
        ctx.live.start()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="web-app", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            msg = "the web app did not start"
            raise RuntimeError(msg)
        time.sleep(0.02)
    try:
        yield Site("127.0.0.1", port, cfg, calls, root)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        if ctx.live is not None:
            ctx.live.stop()
        ctx.close()
