"""``linerec-agent`` verbs on a real archive and audit log: what each shows, records, and refuses.

Every mistake is one line on stderr and a non-zero exit: 2 for a command line
that does not parse, 1 for anything else.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path

import pytest

from agent.archive import Archive
from agent.cli import main as agent_main
from agent.cli_common import UsageError, parse_when
from tests.support.studio import CONSENT, Studio, rec_id

DATA = Path(__file__).resolve().parent / "data" / "contacts"


@dataclass
class Site:
    tmp: Path
    conf: Path
    studio: Studio
    ids: list[str]

    def run(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], list[str]]:
        capsys.readouterr()
        status = agent_main(["--config", str(self.conf), "--as", "tester", *argv])
        captured = capsys.readouterr()
        return status, captured.out.splitlines(), captured.err.splitlines()

    def json(self, capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, object]]:
        status, out, err = self.run(capsys, *argv, "--json")
        assert status == 0, err
        return [json.loads(line) for line in out]

    def error(self, capsys: pytest.CaptureFixture[str], *argv: str, status: int = 1) -> str:
        got, _out, err = self.run(capsys, *argv)
        assert got == status
        assert len(err) == 1, err
        assert "Traceback" not in err[0]
        return err[0].removeprefix("linerec-agent: error: ")

    def audit(self) -> list[tuple[str, str, str | None]]:
        with sqlite3.connect(self.tmp / "audit.sqlite") as db:
            return list(db.execute("SELECT actor, action, target FROM entries ORDER BY seq"))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with Archive(tmp_path / "archive") as archive:
        studio = Studio(archive)
        (tmp_path / "identity.txt").write_text(studio.identity + "\n")
        conf = tmp_path / "agent.toml"
        conf.write_text(
            f'[agent]\nidentity = "{tmp_path / "identity.txt"}"\narchive_dir = "{tmp_path / "archive"}"\n'
            'region = "US"\n[retention]\ndefault_days = 90\n'
        )
        ids = [
            studio.store(rec_id(1, 9, 1), number="2125550143", name=None).id,
            studio.store(rec_id(2, 9, 2), number="(212) 555-0199", name="JANE ROE", duration_s=300).id,
            studio.store(rec_id(3, 9, 3), number=None, name=None, answered=False).id,
        ]
    yield Site(tmp_path, conf, studio, ids)


# --- list and search -------------------------------------------------------------------------


def test_list_shows_every_call_newest_first_and_records_the_filters(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    listed = site.json(capsys, "list")
    assert [item["id"] for item in listed] == site.ids[::-1]
    assert listed[0]["answered"] is False
    assert listed[1]["consent_rule"] == "all-party"
    assert listed[1]["consent_recorded"] is True
    assert {"contact", "caller_number", "duration_s", "path"} <= set(listed[0])
    status, out, _ = site.run(capsys, "list", "--limit", "1")
    assert status == 0
    assert out == [f"{site.ids[2]}  pi-hall          2024-03-03T09:00:00.000Z      0.0s  missed   (P)"]
    assert site.audit() == [("tester", "list", None), ("tester", "list", None)]


def test_search_filters_and_needs_at_least_one(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    found = site.json(capsys, "search", "--caller", "212-555", "--since", "2024-03-02", "--until", "2024-03-02")
    assert [item["id"] for item in found] == [site.ids[1]]
    assert [item["id"] for item in site.json(capsys, "search", "--missed")] == [site.ids[2]]
    assert [item["id"] for item in site.json(capsys, "search", "--min-duration", "100")] == [site.ids[1]]
    assert site.error(capsys, "search") == (
        "search needs at least one filter (--caller, --name, --since, --tag...); list shows every call"
    )
    with sqlite3.connect(site.tmp / "audit.sqlite") as db:
        details = [json.loads(d) for (d,) in db.execute("SELECT details FROM entries WHERE action = 'search'")]
    assert details[0]["filters"]["caller"] == "212-555"
    assert details[0]["filters"]["until"] == parse_when("--until", "2024-03-02", end=True).astimezone(UTC).isoformat(
        timespec="milliseconds"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["list", "--since", "2024-13-01"],
            "argument --since: '2024-13-01' is not a date; expected an ISO date or time (2024-03-05,"
            " 2024-03-05T14:00); local time unless it ends in Z or an offset",
        ),
        (
            ["search", "--until", "yesterday"],
            "argument --until: 'yesterday' is not a date; expected an ISO date or time (2024-03-05,"
            " 2024-03-05T14:00); local time unless it ends in Z or an offset",
        ),
        (["list", "--limit", "0"], "argument --limit: '0' is not a whole number from 1"),
        (["list", "--min-duration", "-3"], "argument --min-duration: '-3' is not a number of seconds (0 or more)"),
        (["list", "--answered", "--missed"], "argument --missed: not allowed with argument --answered"),
        (["frobnicate"], None),
        (["hold", "add", "--reason", "x"], "one of the arguments --recording --caller is required"),
    ],
)
def test_a_command_line_that_does_not_parse_is_one_line_and_status_2(
    site: Site, capsys: pytest.CaptureFixture[str], argv: list[str], message: str | None
) -> None:
    line = site.error(capsys, *argv, status=2)
    if message is not None:
        assert line == message
    else:
        assert line.startswith("argument command: invalid choice: 'frobnicate'")
    assert not (site.tmp / "audit.sqlite").exists(), "nothing ran, so nothing was recorded"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "--caller", "+()"], "--caller '+()' has no digits; give a number or the start of one"),
        (
            ["list", "--since", "2024-03-05", "--until", "2024-03-01"],
            "--since {since} is not before --until {until}",
        ),
        (["list", "--tag", "a,b"], "tag 'a,b' is not valid; expected 1-64 printable characters without commas"),
    ],
)
def test_filters_that_cannot_be_used_are_one_line_and_status_1(
    site: Site, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    since = parse_when("--since", "2024-03-05").isoformat()
    until = parse_when("--until", "2024-03-01", end=True).isoformat()
    assert site.error(capsys, *argv) == message.format(since=since, until=until)


def test_dates_are_local_unless_they_say_otherwise() -> None:
    local_midnight = datetime.combine(date(2024, 3, 5), time()).astimezone()
    assert parse_when("--since", "2024-03-05") == local_midnight
    assert parse_when("--until", "2024-03-05", end=True) == datetime.combine(date(2024, 3, 6), time()).astimezone()
    assert parse_when("--since", "2024-03-05T14:00") == datetime(2024, 3, 5, 14).astimezone()
    assert parse_when("--since", "2024-03-05T14:00Z") == datetime(2024, 3, 5, 14, tzinfo=UTC)
    assert parse_when("--since", "2024-03-05T14:00:30+02:00") == datetime(
        2024, 3, 5, 14, 0, 30, tzinfo=timezone(timedelta(hours=2))
    )
    with pytest.raises(UsageError, match=r"^--since '2024-02-30' is not a date; expected an ISO date or time"):
        parse_when("--since", "2024-02-30")


def test_an_actor_name_that_cannot_be_logged_is_refused(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert agent_main(["--config", str(site.conf), "--as", " x", "list"]) == 1
    assert capsys.readouterr().err.strip() == (
        "linerec-agent: error: --as ' x' must be 1-64 printable characters without surrounding spaces"
    )


# --- show, tag, note, hold -------------------------------------------------------------------


def test_show_tells_everything_about_a_call(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    target = site.ids[0]
    assert site.run(capsys, "tag", target, "Complaint", "billing")[0] == 0
    assert site.run(capsys, "note", target, "asked", "for", "a", "refund")[0] == 0
    assert site.run(capsys, "hold", "add", "--caller", "+1 212 555 0143", "--reason", "case 7")[0] == 0
    assert site.run(capsys, "contacts", "import", str(DATA / "plain.csv"))[0] == 0
    [shown] = site.json(capsys, "show", target)
    assert shown["id"] == target
    assert shown["contact"] == "Alice Example"
    assert shown["consent"] == CONSENT
    assert shown["tags"] == ["billing", "complaint"]
    assert [(n["author"], n["text"]) for n in shown["notes"]] == [("tester", "asked for a refund")]  # type: ignore[union-attr]
    assert [(h["kind"], h["value"], h["reason"]) for h in shown["holds"]] == [  # type: ignore[union-attr]
        ("caller", "+1 212 555 0143", "case 7")
    ]
    assert shown["retention"] == (
        "held: calls from +1 212 555 0143 are under legal hold (this call is from 2125550143), so it is never due"
    )
    [other] = site.json(capsys, "show", site.ids[1])
    assert str(other["retention"]).startswith("due since 2024-05-31T09:00:00Z under default 90 d")
    status, out, _ = site.run(capsys, "show", target)
    assert status == 0
    assert f"id: {target}" in out
    assert "contact: Alice Example" in out
    assert "  jurisdiction: US-CA" in out
    actions = [(action, t) for _, action, t in site.audit()]
    assert ("show", target) in actions
    assert ("tag", target) in actions
    assert ("note", target) in actions
    assert ("hold", "caller:+1 212 555 0143") in actions


@pytest.mark.parametrize(
    "verb", [["show"], ["tag", "--remove"], ["note"], ["hold", "add", "--reason", "r", "--recording"]]
)
def test_an_unknown_recording_is_one_line_naming_it(
    site: Site, capsys: pytest.CaptureFixture[str], verb: list[str]
) -> None:
    unknown = "20200101T000000000Z-00000000"
    argv = [*verb, unknown] + (["x"] if verb[0] in ("tag", "note") else [])
    assert site.error(capsys, *argv) == f"recording '{unknown}' is not in the archive at {site.tmp / 'archive'}"


def test_tags_are_added_and_removed(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    target = site.ids[1]
    assert site.run(capsys, "tag", target, "Training", "training", "sales")[1] == [f"{target}: sales, training"]
    assert site.run(capsys, "tag", "--remove", target, "SALES", "never-there")[1] == [f"{target}: training"]
    assert site.error(capsys, "tag", target, "a,b") == (
        "tag 'a,b' is not valid; expected 1-64 printable characters without commas"
    )
    assert [item["id"] for item in site.json(capsys, "search", "--tag", "TRAINING")] == [target]


def test_notes_refuse_control_characters_and_huge_text(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    assert site.error(capsys, "note", site.ids[0], "bell\x07") == (
        "a note may hold line breaks and tabs but no other control characters"
    )
    assert (
        site.error(capsys, "note", site.ids[0], "x" * 10_001) == "a note must be 1-10000 characters of text, not 10001"
    )
    status, out, _ = site.run(capsys, "note", site.ids[0], "called back")
    assert status == 0
    assert out[0].startswith(f"note 1 on {site.ids[0]} by tester at ")
    assert [item["id"] for item in site.json(capsys, "search", "--note", "CALLED")] == [site.ids[0]]


def test_holds_are_listed_released_once_and_kept_in_the_history(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    assert site.run(capsys, "hold", "add", "--recording", site.ids[1], "--reason", "subject access request")[0] == 0
    assert site.error(capsys, "hold", "add", "--caller", "no digits", "--reason", "r") == (
        "cannot hold calls from 'no digits'; expected a caller number with digits"
    )
    assert site.error(capsys, "hold", "add", "--caller", "555", "--reason", " ") == (
        "a hold needs its reason: 1-500 printable characters (a case, a request, a matter)"
    )
    [hold] = site.json(capsys, "hold", "list")
    assert (hold["id"], hold["kind"], hold["value"], hold["by"], hold["active"]) == (
        1,
        "recording",
        site.ids[1],
        "tester",
        True,
    )
    assert site.run(capsys, "hold", "release", "1")[1] == [f"hold 1 on recording {site.ids[1]} released"]
    assert site.error(capsys, "hold", "release", "1").startswith("hold 1 was already released at ")
    assert (
        site.error(capsys, "hold", "release", "9")
        == "there is no hold 9; `linerec-agent hold list --all` shows every hold"
    )
    assert site.json(capsys, "hold", "list") == []
    [released] = site.json(capsys, "hold", "list", "--all")
    assert (released["active"], released["released_by"]) == (False, "tester")
    assert ("tester", "release", f"recording:{site.ids[1]}") in site.audit()


# --- stats, devices, tombstones --------------------------------------------------------------


def test_stats_count_calls(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    [found] = site.json(capsys, "stats")
    assert (found["calls"], found["answered"], found["missed"], found["duration_s"]) == (3, 2, 1, 360.0)
    status, out, _ = site.run(capsys, "stats", "--since", "2024-03-02T00:00Z", "--until", "2024-03-03T00:00Z")
    assert status == 0
    assert out[0].startswith("1 calls: 1 answered, 0 missed; 0.1 h of audio, ")
    assert out[-1].startswith("  2024-03-02 ")


def test_devices_show_when_each_was_last_seen(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    with Archive(site.tmp / "archive") as archive:
        archive.note_status("pi-hall", {"v": 1, "state": "online", "spool": 0})
    [device] = site.json(capsys, "devices", "list")
    assert (device["id"], device["calls"], device["status"]) == ("pi-hall", 3, {"v": 1, "state": "online", "spool": 0})
    assert device["newest_call"] == "2024-03-03T09:00:00.000+00:00"
    status, out, _ = site.run(capsys, "devices", "list")
    assert status == 0
    assert out[0].startswith(f"pi-hall                  online   last seen {device['last_seen']}")
    assert "       3 calls" in out[0]
    assert site.error(capsys, "devices", "add", "pi-2", "ed25519:AAAA").startswith(
        "public key 'ed25519:AAAA' is not valid"
    )
    assert ("tester", "enrol", "pi-2") in site.audit()


def test_tombstones_are_empty_before_any_purge(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    assert site.json(capsys, "tombstones") == []
    assert site.error(capsys, "tombstones", "--since", "2024-03-02", "--until", "2024-03-01").startswith("--since ")


# --- contacts --------------------------------------------------------------------------------


def test_contacts_import_list_and_remove(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    [report] = site.json(capsys, "contacts", "import", str(DATA / "plain.csv"))
    assert report["added"] == 2
    assert str(report["summary"]).startswith("2 added, 0 updated, 0 unchanged from plain.csv")
    listed = site.json(capsys, "contacts", "list")
    assert ("+12125550143", "Alice Example") in [(c["number"], c["name"]) for c in listed]
    assert [item["id"] for item in site.json(capsys, "search", "--name", "alice")] == [site.ids[0]]
    assert site.run(capsys, "contacts", "remove", "(212) 555-0143")[1] == ["removed (212) 555-0143"]
    assert (
        site.error(capsys, "contacts", "remove", "(212) 555-0143")
        == "there is no contact with the number '(212) 555-0143'"
    )
    assert site.error(capsys, "contacts", "import", str(DATA / "plain.csv"), "--region", "XX") == (
        "region 'XX' is not known; expected a two-letter country code such as US or GB"
    )
    missing = site.tmp / "nope.vcf"
    assert str(missing) in site.error(capsys, "contacts", "import", str(missing))


# --- the audit log ---------------------------------------------------------------------------


def some_entries(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["list"], ["show", site.ids[0]], ["show", site.ids[1]], ["list", "--missed"]):
        assert site.run(capsys, *argv)[0] == 0


def tamper(site: Site, *statements: str) -> None:
    with sqlite3.connect(site.tmp / "audit.sqlite") as db:
        for statement in statements:
            db.execute(statement)


def test_audit_verify_passes_a_sound_log_and_checks_an_exported_head(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    some_entries(site, capsys)
    status, out, _ = site.run(capsys, "audit", "head")
    assert status == 0
    head = out[0]
    assert head.startswith("5:")
    [report] = site.json(capsys, "audit", "verify", "--expected-head", head)
    assert (report["ok"], report["entries"], report["macs_checked"]) == (True, 5, True)
    assert site.error(capsys, "audit", "verify", "--expected-head", "5:abc") == (
        "--expected-head '5:abc' must be SEQ:HASH as `linerec-agent audit head` prints it"
    )
    entries = site.json(capsys, "audit", "list", "--target", site.ids[0])
    assert [(e["action"], e["actor"]) for e in entries] == [("show", "tester")]


@pytest.mark.parametrize(
    ("statements", "kind"),
    [
        (["UPDATE entries SET actor = 'someone-else' WHERE seq = 2"], "edited"),
        (["UPDATE entries SET details = '{}' WHERE seq = 1"], "edited"),
        (["DELETE FROM entries WHERE seq = 2"], "missing"),
        (
            [
                "CREATE TABLE saved AS SELECT * FROM entries ORDER BY seq",
                "DELETE FROM entries",
                "INSERT INTO entries SELECT * FROM saved WHERE seq NOT IN (2, 3) AND seq < 4",
                "INSERT INTO entries SELECT * FROM saved WHERE seq = 3",
                "INSERT INTO entries SELECT * FROM saved WHERE seq = 2",
                "INSERT INTO entries SELECT * FROM saved WHERE seq >= 4",
                "DROP TABLE saved",
            ],
            "reordered",
        ),
    ],
)
def test_audit_verify_finds_an_edited_removed_or_reordered_entry(
    site: Site, capsys: pytest.CaptureFixture[str], statements: list[str], kind: str
) -> None:
    some_entries(site, capsys)
    tamper(site, *statements)
    status, out, _ = site.run(capsys, "audit", "verify", "--json")
    assert status == 1
    report = json.loads(out[0])
    assert report["ok"] is False
    assert kind in [p["kind"] for p in report["problems"]]
    status, out, _ = site.run(capsys, "audit", "verify")
    assert status == 1
    assert out[-1].endswith("problem(s)")


def test_a_truncated_log_stops_every_verb_until_the_checkpoint_is_reset(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    some_entries(site, capsys)
    tamper(site, "DELETE FROM entries WHERE seq = 4")
    message = site.error(capsys, "list")
    assert message.startswith(f"audit log {site.tmp / 'audit.sqlite'} does not match its checkpoint: ")
    [report] = [json.loads(line) for line in site.run(capsys, "audit", "verify", "--json")[1]]
    assert "truncated" in [p["kind"] for p in report["problems"]]
    status, out, _ = site.run(capsys, "audit", "reset-checkpoint")
    assert status == 0
    assert out[0].startswith("checkpoint reset at entry 4; it was [4, ")
    assert site.run(capsys, "list")[0] == 0


def test_the_audit_key_is_created_outside_the_archive_with_the_owner_alone_able_to_read_it(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.run(capsys, "list")
    key = site.tmp / "audit.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert not list((site.tmp / "archive").glob("audit*"))
    conf = site.tmp / "inside.toml"
    conf.write_text(f'[agent]\narchive_dir = "{site.tmp / "archive"}"\naudit_key = "{site.tmp / "archive" / "k"}"\n')
    capsys.readouterr()
    assert agent_main(["--config", str(conf), "list"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"linerec-agent: error: {conf}: agent.audit_key is '{site.tmp / 'archive' / 'k'}'; expected a path outside"
        " agent.archive_dir, so that the archive folder never holds it"
    )
