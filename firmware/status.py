"""``linerec status``: is the recorder running, what did the line do lately, and is anything piling up.

The running service keeps a small status file in its state directory
(:class:`StatusFile`: the line state, the last calls and the watchdog's health
verdict), replaced whole on every change. ``linerec status`` reads it together
with systemd's view of the unit (``systemctl show``), the spool's directories
and the free space of the disk, and prints a summary for a person or, with
``--json``, one JSON object.

Reading never changes anything: the spool is counted from its directories
(the layout :mod:`firmware.spool` describes) without opening a
:class:`~firmware.spool.Spool`, which would create and tidy them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from firmware.config import DeviceConfig
from firmware.watchdog import Verdict
from firmware.wire.manifest import utc_iso

log = logging.getLogger("linerec.status")

STATUS_NAME = "status.json"
FORMAT = 1
KEEP_CALLS = 10
UNIT = "linerec.service"
SYSTEMD_RUNTIME = Path("/run/systemd/system")  # present only when systemd is the init system
SHOW_PROPERTIES = (
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "UnitFileState",
    "MainPID",
    "NRestarts",
    "ExecMainStartTimestamp",
    "StatusText",
)


def status_path(config: DeviceConfig) -> Path:
    """Where the service keeps its status file."""
    return config.device.state_dir / STATUS_NAME


# -- written by the service ------------------------------------------------------------------------


class StatusFile:
    """The service's status on disk, replaced atomically (write, fsync, rename) whenever it changes.

    The last calls survive a restart: the list is read back when the file is
    opened. Writing is thread-safe (the main loop and the watchdog both write);
    a write that fails is logged once and never raised, since the status is
    only an account of the work and must not stop it.
    """

    def __init__(self, path: Path, *, device_id: str, line: str, line_name: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._failed: str | None = None
        self._doc: dict[str, Any] = {
            "format": FORMAT,
            "device_id": device_id,
            "line": line,
            "line_name": line_name,
            "pid": os.getpid(),
            "started_at": utc_iso(time.time()),
            "stopped_at": None,
            "updated_at": None,
            "line_state": "starting",
            "audio_overflows": 0,
            "disk_alert": False,
            "last_calls": _previous_calls(path),
            "health": None,
        }

    def update(self, facts: Mapping[str, object] | None = None, verdict: Verdict | None = None) -> None:
        """Take the service's status facts and/or the watchdog's verdict, and write the file."""
        with self._lock:
            doc = self._doc
            if facts is not None:
                for key in ("line_state", "audio_overflows", "disk_alert"):
                    if key in facts:
                        doc[key] = facts[key]
                last = facts.get("last_call")
                if isinstance(last, dict) and (not doc["last_calls"] or doc["last_calls"][0] != last):
                    doc["last_calls"] = [last, *doc["last_calls"]][:KEEP_CALLS]
            if verdict is not None:
                doc["health"] = verdict.to_json()
            doc["updated_at"] = utc_iso(time.time())
            self._write(json.dumps(doc, indent=1, sort_keys=True, default=str) + "\n")

    def stopped(self) -> None:
        """The service is on its way out: the health verdict no longer holds."""
        with self._lock:
            self._doc["stopped_at"] = self._doc["updated_at"] = utc_iso(time.time())
            self._doc["health"] = None
            self._write(json.dumps(self._doc, indent=1, sort_keys=True, default=str) + "\n")

    def _write(self, text: str) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            with tmp.open("w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(self.path)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if reason != self._failed:
                log.error("cannot write the status file %s: %s", self.path, reason)
            self._failed = reason
            return
        self._failed = None


def _previous_calls(path: Path) -> list[dict[str, object]]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    calls = doc.get("last_calls") if isinstance(doc, dict) else None
    return [c for c in calls if isinstance(c, dict)][:KEEP_CALLS] if isinstance(calls, list) else []


# -- read by `linerec status` ----------------------------------------------------------------------


def parse_show(text: str) -> dict[str, str]:
    """``systemctl show`` output (``Key=value`` lines) as a dict."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key] = value
    return props


def service_state(
    unit: str = UNIT,
    *,
    runtime: Path = SYSTEMD_RUNTIME,
    systemctl: str | None = None,
) -> dict[str, object]:
    """What systemd says about ``unit``, or that there is no systemd to ask."""
    tool = systemctl if systemctl is not None else shutil.which("systemctl")
    if not runtime.is_dir() or tool is None:
        return {"systemd": False, "summary": "not running under systemd"}
    argv = [tool, "show", unit, "--no-pager", f"--property={','.join(SHOW_PROPERTIES)}"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"systemd": True, "summary": f"systemctl could not be asked: {exc}"}
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit status {done.returncode}"
        return {"systemd": True, "summary": f"systemctl could not be asked: {reason}"}
    props = parse_show(done.stdout)
    return {"systemd": True, "summary": describe_service(props), **{k: props.get(k, "") for k in SHOW_PROPERTIES}}


def describe_service(props: Mapping[str, str]) -> str:
    """One line from ``systemctl show`` properties: state, since when, restarts, main process."""
    if props.get("LoadState") == "not-found":
        return "not installed (no linerec.service unit)"
    words = f"{props.get('ActiveState', 'unknown')} ({props.get('SubState', 'unknown')})"
    since = props.get("ExecMainStartTimestamp", "")
    if since and props.get("ActiveState") in ("active", "reloading", "activating"):
        words += f" since {since}"
    restarts = props.get("NRestarts", "")
    if restarts.isdigit():
        words += f"; {restarts} restart{'s' if restarts != '1' else ''}"
    pid = props.get("MainPID", "0")
    if pid not in ("", "0"):
        words += f"; pid {pid}"
    if props.get("Result") not in (None, "", "success"):
        words += f"; last result {props['Result']}"
    if props.get("UnitFileState") not in (None, "", "enabled"):
        words += f"; {props['UnitFileState']} at boot"
    return words


def read_status_file(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The service's status file, or None and why it could not be read."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"the service has not written {path} yet"
    except PermissionError:
        return None, f"cannot read {path}: permission denied (run as root or as a member of the linerec group)"
    except OSError as exc:
        return None, f"cannot read {path}: {exc.strerror or exc}"
    except ValueError:
        return None, f"{path} is not a status file linerec wrote (not JSON)"
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return None, f"{path} is not a status file this linerec understands"
    return doc, None


def spool_facts(root: Path) -> dict[str, object]:
    """Recordings waiting (and the bytes they take on disk), rejected and being written, from the spool's folders."""
    facts: dict[str, object] = {"path": str(root)}
    try:
        waiting = [e for e in os.scandir(root / "outbox") if e.is_dir()]
        facts["waiting"] = len(waiting)
        facts["waiting_bytes"] = sum(_tree_bytes(Path(e.path)) for e in waiting)
        facts["oldest_waiting"] = min((e.name for e in waiting), default=None)
        facts["rejected"] = _count_dirs(root / "rejected")
        facts["being_written"] = _count_dirs(root / "incoming")
    except FileNotFoundError:
        facts["error"] = f"there is no spool at {root} yet"
    except PermissionError:
        facts["error"] = f"cannot read the spool {root}: permission denied (run as root or as a member of linerec)"
    except OSError as exc:
        facts["error"] = f"cannot read the spool {root}: {exc.strerror or exc}"
    return facts


def _count_dirs(path: Path) -> int:
    try:
        return sum(1 for e in os.scandir(path) if e.is_dir())
    except FileNotFoundError:
        return 0


def _tree_bytes(path: Path) -> int:
    total = 0
    for entry in os.scandir(path):
        if entry.is_file(follow_symlinks=False):
            total += entry.stat(follow_symlinks=False).st_size
    return total


def disk_facts(path: Path) -> dict[str, object]:
    """Free and total bytes of the disk that holds ``path`` (or its nearest existing parent)."""
    where = path
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        usage = shutil.disk_usage(where)
    except OSError as exc:
        return {"path": str(path), "error": f"cannot measure the disk of {path}: {exc.strerror or exc}"}
    return {"path": str(where), "free_bytes": usage.free, "total_bytes": usage.total}


def gather(config: DeviceConfig, *, service: Callable[[], dict[str, object]] = service_state) -> dict[str, object]:
    """Everything ``linerec status`` reports, as one JSON-ready dict."""
    doc, problem = read_status_file(status_path(config))
    device: dict[str, object] = {
        "id": config.device.id,
        "line": config.device.line,
        "line_name": config.device.line_name,
    }
    if doc is not None:
        device.update(
            line_state=doc.get("line_state"),
            audio_overflows=doc.get("audio_overflows"),
            disk_alert=doc.get("disk_alert"),
            status_updated_at=doc.get("updated_at"),
            status_pid=doc.get("pid"),
            stopped_at=doc.get("stopped_at"),
        )
    else:
        device["status_problem"] = problem
    return {
        "service": service(),
        "device": device,
        "health": doc.get("health") if doc is not None else None,
        "last_calls": doc.get("last_calls", []) if doc is not None else [],
        "spool": spool_facts(config.device.spool_dir),
        "disk": disk_facts(config.device.state_dir),
    }


def render(report: Mapping[str, Any]) -> list[str]:
    """The report as lines for a person."""
    device, spool, disk = report["device"], report["spool"], report["disk"]
    lines = [f"service:  {report['service']['summary']}"]
    health = report.get("health")
    if device.get("stopped_at"):
        lines.append(f"health:   not watched: the service stopped at {device['stopped_at']}")
    elif isinstance(health, dict):
        lines.append(f"health:   {health.get('summary')} (as of {device.get('status_updated_at')})")
    if "status_problem" in device:
        lines.append(f"line:     {device['line_name']} ({device['line']}): state unknown; {device['status_problem']}")
    else:
        state = f"{device['line_name']} ({device['line']}): {device.get('line_state')}"
        if device.get("audio_overflows"):
            state += f"; {device['audio_overflows']} audio blocks lost since the start"
        lines.append(f"line:     {state}")
    calls = report.get("last_calls") or []
    lines.append("calls:    none yet" if not calls else "calls:    last first")
    lines += [f"  {_call_line(call)}" for call in calls]
    if "error" in spool:
        lines.append(f"spool:    {spool['error']}")
    else:
        lines.append(
            f"spool:    {spool['waiting']} recording{'s' if spool['waiting'] != 1 else ''} waiting "
            f"({_size(spool['waiting_bytes'])}); {spool['rejected']} rejected; {spool['being_written']} being written"
        )
    if "error" in disk:
        lines.append(f"disk:     {disk['error']}")
    else:
        alert = "; below spool.alert_free_mb" if device.get("disk_alert") else ""
        lines.append(
            f"disk:     {_size(disk['free_bytes'])} free of {_size(disk['total_bytes'])} on {disk['path']}{alert}"
        )
    return lines


def _call_line(call: Mapping[str, Any]) -> str:
    when = call.get("started_at") or "?"
    if call.get("answered"):
        duration = call.get("duration_s")
        how = f"answered, {duration:.1f} s" if isinstance(duration, int | float) else "answered"
    else:
        how = "missed"
    rings = call.get("rings")
    ring_text = f", {rings} ring{'s' if rings != 1 else ''}" if isinstance(rings, int) else ""
    return f"{when}  {how}{ring_text}; ended by {call.get('hangup_cause') or 'unknown'}"


def _size(n: object) -> str:
    """Bytes in decimal units, as disk makers and ``df -H`` count them."""
    value = float(n) if isinstance(n, int | float) else 0.0
    if value < 1000:
        return f"{value:.0f} B"
    units = ("kB", "MB", "GB")
    step = 0
    value /= 1000
    while value >= 1000 and step < len(units) - 1:
        value /= 1000
        step += 1
    return f"{value:.1f} {units[step]}"
