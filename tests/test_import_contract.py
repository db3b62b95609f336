"""The agent must stay light: importing it pulls in no audio, GPIO or numeric stack, and no device code."""

from __future__ import annotations

import json
import subprocess
import sys

AGENT_MODULES = [
    "agent",
    "agent.config",
    "agent.errors",
    "agent.archive",
    "agent.schema",
    "agent.storage",
    "agent.index",
    "agent.annotate",
    "agent.purge",
    "agent.integrity",
    "agent.retention",
    "agent.audit",
    "agent.audit_entry",
    "agent.audit_key",
    "agent.audit_verify",
    "agent.notify",
    "agent.notify_settings",
    "agent.notify_event",
    "agent.outbox",
    "agent.webhook",
    "agent.contact_files",
    "agent.ingest",
    "agent.incoming",
    "agent.cli",
    "agent.cli_common",
    "agent.cli_calls",
    "agent.cli_admin",
]
# In the agent extra, and loaded only by the verbs that need them.
OPTIONAL = ("phonenumbers", "apprise", "rich")
FORBIDDEN = ("numpy", "sounddevice", "gpiozero", "soundfile", "webrtcvad", "RPi")


def imported_after(modules: list[str]) -> list[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout))


def test_importing_agent_pulls_in_no_audio_gpio_or_numpy() -> None:
    loaded = imported_after(AGENT_MODULES)
    heavy = [m for m in loaded if m.split(".")[0] in FORBIDDEN]
    assert heavy == []


def test_the_archive_and_the_command_load_no_optional_extra_until_a_verb_needs_it() -> None:
    loaded = imported_after(AGENT_MODULES)
    assert [m for m in loaded if m.split(".")[0] in OPTIONAL] == []


def test_agent_uses_only_the_wire_part_of_firmware() -> None:
    loaded = imported_after(AGENT_MODULES)
    firmware = [m for m in loaded if m.startswith("firmware.")]
    assert firmware, "the agent is expected to use firmware.wire"
    assert [m for m in firmware if not m.startswith("firmware.wire")] == []


def test_wire_needs_only_the_standard_library_and_cryptography() -> None:
    loaded = imported_after(["firmware.wire." + m for m in ("age", "manifest", "messages", "signing", "topics")])
    baseline = set(imported_after([]))  # the interpreter's own start-up (site hooks, editable finders)
    third_party = {m.split(".")[0] for m in set(loaded) - baseline} - set(sys.stdlib_module_names)
    assert third_party <= {"firmware", "cryptography", "_cffi_backend", "_openssl", "_rust"}
