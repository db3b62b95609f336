"""docs/PROTOCOL.md and the code agree: every topic the code can make is in the table, and nothing else."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from firmware.wire import topics

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "PROTOCOL.md"
PLACEHOLDERS = {"device_id": "<device>", "rec_id": "<id>", "index": "<n>"}


def documented_rows() -> dict[str, dict[str, str]]:
    """The topic table of the document, by topic pattern."""
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`linerec/"):
            topic, sender, qos, retained, payload = cells
            rows[topic.strip("`")] = {"from": sender, "qos": qos, "retained": retained, "payload": payload}
    return rows


def code_topics() -> dict[str, str]:
    """Every topic function of firmware/wire/topics.py, called with the document's placeholders."""
    made = {}
    for name, function in inspect.getmembers(topics, inspect.isfunction):
        params = list(inspect.signature(function).parameters)
        if function.__module__ != topics.__name__ or not params or params[0] != "device_id":
            continue
        if name.startswith(("check_", "parse_")):
            continue
        made[function(*(PLACEHOLDERS[p] for p in params))] = name
    return made


def test_the_topic_table_lists_exactly_the_topics_the_code_makes() -> None:
    assert set(documented_rows()) == set(code_topics())


def test_every_topic_is_qos_1_and_only_the_status_and_the_recipients_are_retained() -> None:
    rows = documented_rows()
    assert {row["qos"] for row in rows.values()} == {"1"}
    retained = [t for t, row in rows.items() if row["retained"] == "yes"]
    assert retained == [topics.status("<device>"), topics.recipients("<device>")]
    # And the code does as the table says: every publish of the uplink is QoS 1.
    calls = publish_calls((ROOT / "firmware" / "uplink.py").read_text())
    assert len(calls) >= 4
    assert all("qos=1" in call for call in calls)
    # The agent deploys recipients retained at QoS 1.
    [deploy] = [c for c in publish_calls((ROOT / "agent" / "deploy.py").read_text()) if "qos=" in c]
    assert "qos=1" in deploy
    assert "retain=True" in deploy


def publish_calls(source: str) -> list[str]:
    """The argument text of every ``.publish(...)`` call in ``source``, nested parentheses included."""
    found = []
    for match in re.finditer(r"\.publish\(", source):
        depth, end = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(source[end], 0)
            end += 1
        found.append(source[match.end() : end - 1])
    return found


def test_the_subscriptions_and_the_sender_of_each_topic_are_as_documented() -> None:
    text = DOC.read_text()
    for subscription in topics.AGENT_SUBSCRIPTIONS:
        assert f"`{subscription}`" in text
    rows = documented_rows()
    from_agent = {topics.ack("<device>"), topics.recipients("<device>")}
    assert {t for t, row in rows.items() if row["from"] == "agent"} == from_agent
    assert {row["from"] for t, row in rows.items() if t not in from_agent} == {"device"}
