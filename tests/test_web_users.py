"""The web app's users on a real SQLite file: roles, argon2 passwords, lockout, sessions and the ``users`` verbs.

Time is an injected clock; nothing sleeps. The store's file is read as bytes to show
what a stolen copy would give away.
"""

from __future__ import annotations

import argparse
import io
import json
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from agent.cli_common import Context
from agent.web import cli_users
from agent.web.users import (
    PERMISSIONS,
    ROLES,
    AuthError,
    LoginRefused,
    Session,
    User,
    UserStore,
    can,
)

T0 = 1_709_647_200.0  # 2024-03-05T14:00:00Z
GOOD = "correct horse battery"
OTHER = "another long passphrase"


class Clock:
    """Seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "web-users.sqlite"


@pytest.fixture
def store(path: Path, clock: Clock) -> Iterator[UserStore]:
    with UserStore(path, clock=clock, max_failures=3, lockout_s=600, idle_s=300, absolute_s=3600) as opened:
        yield opened


def file_bytes(path: Path) -> bytes:
    """The database and its WAL, as someone copying the folder would get them."""
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def refusal(store: UserStore, name: str, password: str) -> str:
    with pytest.raises(LoginRefused) as caught:
        store.login(name, password)
    return str(caught.value)


# --- users and roles -------------------------------------------------------------------------


def test_users_are_added_listed_given_new_roles_and_removed(store: UserStore, clock: Clock) -> None:
    added = store.add("Alice", "admin", GOOD)
    assert added == User("alice", "admin", "2024-03-05T14:00:00Z", None, 0)
    clock.advance(60)
    store.add("bob.smith-2_x", "reviewer", OTHER)
    assert [(u.name, u.role, u.created_at) for u in store.users()] == [
        ("alice", "admin", "2024-03-05T14:00:00Z"),
        ("bob.smith-2_x", "reviewer", "2024-03-05T14:01:00Z"),
    ]
    store.set_role("BOB.SMITH-2_X", "auditor")
    assert store.get("bob.smith-2_x").role == "auditor"
    store.remove("alice")
    assert [u.name for u in store.users()] == ["bob.smith-2_x"]
    with pytest.raises(AuthError) as caught:
        store.get("alice")
    assert str(caught.value) == "there is no user 'alice'"
    with pytest.raises(AuthError) as caught:
        store.add("bob.smith-2_x", "admin", GOOD)
    assert str(caught.value) == "user 'bob.smith-2_x' already exists"


def test_each_role_may_do_what_it_is_for_and_nothing_else() -> None:
    assert ROLES == ("admin", "reviewer", "auditor")
    assert all(can("admin", p) for p in ("search", "listen", "annotate", "export", "admin", "audit"))
    assert [p for p in sorted(PERMISSIONS["admin"]) if can("reviewer", p)] == ["annotate", "export", "listen", "search"]
    assert [p for p in sorted(PERMISSIONS["admin"]) if can("auditor", p)] == ["audit", "search"]
    assert not can("root", "search")
    assert not can("admin", "fly")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.add("", "admin", GOOD), "user name '' must be 1-64 characters of a-z, 0-9, '.', '_' and '-'"),
        (
            lambda s: s.add("jo hn", "admin", GOOD),
            "user name 'jo hn' must be 1-64 characters of a-z, 0-9, '.', '_' and '-'",
        ),
        (
            lambda s: s.add("x" * 65, "admin", GOOD),
            f"user name '{'x' * 65}' must be 1-64 characters of a-z, 0-9, '.', '_' and '-'",
        ),
        (
            lambda s: s.add("zoë", "admin", GOOD),
            "user name 'zoë' must be 1-64 characters of a-z, 0-9, '.', '_' and '-'",
        ),
        (lambda s: s.add("carol", "root", GOOD), "role 'root' is not one of: admin, reviewer, auditor"),
        (
            lambda s: s.add("carol", "admin", "short pass1"),
            "the password for 'carol' is too short; it needs at least 12 characters",
        ),
        (
            lambda s: s.add("carol", "admin", "x" * 1025),
            "the password for 'carol' is too long; at most 1024 characters are allowed",
        ),
        (
            lambda s: s.add("carol.longname", "admin", "Carol.Longname"),
            "the password for 'carol.longname' must not be the user name",
        ),
        (lambda s: s.set_password("nobody", GOOD), "there is no user 'nobody'"),
        (lambda s: s.set_role("nobody", "admin"), "there is no user 'nobody'"),
        (lambda s: s.remove("nobody"), "there is no user 'nobody'"),
        (lambda s: s.unlock("nobody"), "there is no user 'nobody'"),
    ],
)
def test_bad_names_roles_and_passwords_are_refused_in_one_line(
    store: UserStore, call: Callable[[UserStore], object], message: str
) -> None:
    with pytest.raises(AuthError) as caught:
        call(store)
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)
    assert store.users() == []


# --- passwords -----------------------------------------------------------------------------


def test_the_file_holds_an_argon2_hash_and_never_the_password(store: UserStore, path: Path) -> None:
    store.add("alice", "admin", GOOD)
    store.set_password("alice", OTHER)
    data = file_bytes(path)
    assert GOOD.encode() not in data
    assert OTHER.encode() not in data
    with sqlite3.connect(path) as db:
        (digest,) = db.execute("SELECT hash FROM users").fetchone()
    assert digest.startswith("$argon2id$")
    assert PasswordHasher().verify(digest, OTHER)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert refusal(store, "alice", GOOD) == "wrong user name or password"
    assert store.login("alice", OTHER).user.name == "alice"


def test_a_hash_made_with_weaker_parameters_is_replaced_at_the_next_sign_in(store: UserStore, path: Path) -> None:
    store.add("alice", "admin", GOOD)
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(GOOD)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE users SET hash = ?", (weak,))
    store.login("alice", GOOD)
    with sqlite3.connect(path) as db:
        (digest,) = db.execute("SELECT hash FROM users").fetchone()
    assert digest != weak
    assert not PasswordHasher().check_needs_rehash(digest)
    assert store.login("alice", GOOD).user.name == "alice"


def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(store: UserStore) -> None:
    store.add("alice", "admin", GOOD)
    answers = {
        refusal(store, "alice", OTHER),
        refusal(store, "mallory", GOOD),
        refusal(store, "not a name!", GOOD),
        refusal(store, "alice", ""),
    }
    assert answers == {"wrong user name or password"}


# --- lockout -------------------------------------------------------------------------------


def test_an_account_locks_after_max_failures_and_stays_locked_with_the_right_password(
    store: UserStore, clock: Clock
) -> None:
    store.add("alice", "admin", GOOD)
    assert refusal(store, "alice", "wrong guess one") == "wrong user name or password"
    assert refusal(store, "alice", "wrong guess two") == "wrong user name or password"
    assert store.get("alice").failures == 2
    locked = "this account is locked until 14:10 UTC after 3 failed sign-ins"
    assert refusal(store, "alice", "wrong guess three") == locked
    assert store.get("alice").locked_until == "2024-03-05T14:10:00Z"
    clock.advance(120)
    assert refusal(store, "alice", GOOD) == locked  # the right password neither unlocks nor extends
    assert store.get("alice").locked_until == "2024-03-05T14:10:00Z"


def test_a_wrong_password_while_locked_extends_the_lock(store: UserStore, clock: Clock) -> None:
    store.add("alice", "admin", GOOD)
    for _ in range(3):
        refusal(store, "alice", "a wrong guess")
    clock.advance(300)
    assert refusal(store, "alice", "a wrong guess") == "this account is locked until 14:15 UTC after 4 failed sign-ins"
    clock.advance(400)  # past the first lock's end, not the extended one
    assert refusal(store, "alice", GOOD) == "this account is locked until 14:15 UTC after 4 failed sign-ins"


def test_a_lock_survives_reopening_the_store_and_ends_after_lockout_s(
    store: UserStore, path: Path, clock: Clock
) -> None:
    store.add("alice", "admin", GOOD)
    for _ in range(3):
        refusal(store, "alice", "a wrong guess")
    store.close()
    with UserStore(path, clock=clock, max_failures=3, lockout_s=600) as reopened:
        assert refusal(reopened, "alice", GOOD) == "this account is locked until 14:10 UTC after 3 failed sign-ins"
        clock.advance(600)
        assert reopened.get("alice") == User("alice", "admin", "2024-03-05T14:00:00Z", None, 0)
        # The count starts again once a lock has run out: one more wrong guess does not relock.
        assert refusal(reopened, "alice", "a wrong guess") == "wrong user name or password"
        assert reopened.get("alice").failures == 1
        assert reopened.login("alice", GOOD).user.failures == 0


def test_unlock_ends_a_lock_and_a_successful_sign_in_resets_the_count(store: UserStore) -> None:
    store.add("alice", "admin", GOOD)
    for _ in range(3):
        refusal(store, "alice", "a wrong guess")
    store.unlock("alice")
    assert store.get("alice").locked_until is None
    refusal(store, "alice", "a wrong guess")
    refusal(store, "alice", "a wrong guess")
    store.login("alice", GOOD)
    assert store.get("alice").failures == 0
    refusal(store, "alice", "a wrong guess")
    refusal(store, "alice", "a wrong guess")
    assert refusal(store, "alice", "a wrong guess").startswith("this account is locked")


# --- sessions ------------------------------------------------------------------------------


def test_a_session_is_found_by_its_token_and_the_file_holds_only_its_hash(store: UserStore, path: Path) -> None:
    store.add("alice", "reviewer", GOOD)
    session = store.login("alice", GOOD, remote="192.0.2.7")
    assert len(session.token) >= 43
    assert session.csrf != session.token
    found = store.session(session.token)
    assert found == Session(session.token, store.get("alice"), session.csrf, T0, T0)
    data = file_bytes(path)
    assert session.token.encode() not in data
    assert b"192.0.2.7" not in data
    assert store.session("made-up-token") is None
    assert store.session("") is None


def test_a_session_ends_after_idle_s_without_use(store: UserStore, clock: Clock) -> None:
    store.add("alice", "reviewer", GOOD)
    token = store.login("alice", GOOD).token
    for _ in range(5):  # used every 299 s: alive well past one idle period
        clock.advance(299)
        found = store.session(token)
        assert found is not None
        assert found.last_seen == clock.now
    clock.advance(300)
    assert store.session(token) is None
    clock.now = T0 + 5 * 299  # even if the clock went back, an ended session is gone
    assert store.session(token) is None


def test_a_session_ends_absolute_s_after_sign_in_however_busy(store: UserStore, clock: Clock) -> None:
    store.add("alice", "reviewer", GOOD)
    token = store.login("alice", GOOD).token
    while clock.now < T0 + 3600 - 200:
        clock.advance(200)
        assert store.session(token) is not None
    clock.advance(200)
    assert store.session(token) is None


def test_logout_and_changes_to_the_user_end_sessions(store: UserStore) -> None:
    store.add("alice", "reviewer", GOOD)
    store.add("bob", "reviewer", OTHER)
    a1, a2, b = store.login("alice", GOOD), store.login("alice", GOOD), store.login("bob", OTHER)
    store.logout(a1.token)
    assert store.session(a1.token) is None
    assert store.session(a2.token) is not None
    store.set_role("alice", "auditor")
    assert store.session(a2.token) is None
    a3 = store.login("alice", GOOD)
    assert a3.user.role == "auditor"
    store.set_password("alice", "a brand new passphrase")
    assert store.session(a3.token) is None
    a4 = store.login("alice", "a brand new passphrase")
    store.remove("alice")
    assert store.session(a4.token) is None
    assert store.session(b.token) is not None  # someone else's session is untouched


def test_locking_an_account_ends_its_sessions(store: UserStore) -> None:
    store.add("alice", "reviewer", GOOD)
    token = store.login("alice", GOOD).token
    for _ in range(3):
        refusal(store, "alice", "a wrong guess")
    store.unlock("alice")
    assert store.session(token) is None


def test_csrf_tokens_belong_to_their_session(store: UserStore) -> None:
    store.add("alice", "reviewer", GOOD)
    one, two = store.login("alice", GOOD), store.login("alice", GOOD)
    assert store.check_csrf(one, one.csrf)
    assert not store.check_csrf(one, two.csrf)
    assert not store.check_csrf(one, None)
    assert not store.check_csrf(one, "")
    assert not store.check_csrf(one, one.csrf[:-1])
    assert not store.check_csrf(one, "é" + one.csrf)


# --- the file ------------------------------------------------------------------------------


def test_a_file_that_is_not_a_user_store_is_refused_in_one_line(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database at all\n" * 200)
    with pytest.raises(AuthError) as caught:
        UserStore(garbage)
    assert str(caught.value) == f"{garbage} is not a linerec web user store (file is not a database)"
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    db.close()
    with pytest.raises(AuthError) as caught:
        UserStore(other)
    assert str(caught.value) == f"{other} is not a linerec web user store (it is some other SQLite database)"


def test_a_store_from_a_newer_version_is_refused_in_one_line(path: Path) -> None:
    UserStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 2")
    db.close()
    with pytest.raises(AuthError) as caught:
        UserStore(path)
    assert str(caught.value) == f"web user store {path} has schema version 2; this agent knows versions up to 1"


# --- the users verbs -----------------------------------------------------------------------


class Agent:
    """The ``users`` verbs with a real config, audit log and user store."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.conf = tmp / "agent.toml"
        self.conf.write_text(f'[agent]\narchive_dir = "{tmp / "archive"}"\n')
        self.parser = argparse.ArgumentParser(prog="linerec-agent")
        cli_users.add_users_parser(self.parser.add_subparsers(dest="command", required=True))

    def run(self, *argv: str, stdin: str = "") -> tuple[int, list[str]]:
        args = self.parser.parse_args(list(argv))
        out = io.StringIO()
        ctx = Context(self.conf, "cli:tester", out=out)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("sys.stdin", io.StringIO(stdin))
            try:
                status = cli_users.HANDLERS[args.verb](ctx, args)
            finally:
                ctx.close()
        return status, out.getvalue().splitlines()

    def audit(self) -> list[tuple[str, str, str, dict[str, object]]]:
        with sqlite3.connect(self.tmp / "audit.sqlite") as db:
            rows = db.execute("SELECT actor, action, target, details FROM entries ORDER BY seq").fetchall()
        db.close()
        return [(actor, action, target, json.loads(details)) for actor, action, target, details in rows]


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    return Agent(tmp_path)


def test_the_users_verbs_change_the_store_and_record_what_changed(agent: Agent) -> None:
    assert cli_users.users_path(Context(agent.conf, "x").cfg) == agent.tmp / "web-users.sqlite"
    assert agent.run("users", "add", "Alice", "--role", "admin", "--password-stdin", stdin=GOOD + "\n") == (
        0,
        ["added alice (admin)"],
    )
    assert agent.run("users", "add", "bob", "--role", "reviewer", "--password-stdin", stdin=OTHER + "\r\n")[0] == 0
    assert agent.run("users", "role", "bob", "auditor") == (
        0,
        ["bob is now auditor (was reviewer); the user's sessions have ended"],
    )
    assert agent.run("users", "passwd", "bob", "--password-stdin", stdin="a third passphrase\n")[0] == 0
    with UserStore(agent.tmp / "web-users.sqlite") as store:
        assert store.login("bob", "a third passphrase").user.role == "auditor"
        for _ in range(5):
            with pytest.raises(LoginRefused):
                store.login("alice", "a wrong guess")
    status, lines = agent.run("users", "list", "--json")
    listed = [json.loads(line) for line in lines]
    assert status == 0
    assert [(u["name"], u["role"], u["failures"]) for u in listed] == [("alice", "admin", 5), ("bob", "auditor", 0)]
    assert listed[0]["locked_until"] is not None
    assert agent.run("users", "unlock", "alice") == (0, ["unlocked alice"])
    assert agent.run("users", "remove", "bob") == (0, ["removed bob"])
    assert agent.run("users", "list")[1][0].startswith("alice                    admin     since ")
    entries = agent.audit()
    assert [(e[0], e[1], e[2], e[3]["change"]) for e in entries] == [
        ("cli:tester", "user", "alice", "add"),
        ("cli:tester", "user", "bob", "add"),
        ("cli:tester", "user", "bob", "role"),
        ("cli:tester", "user", "bob", "password"),
        ("cli:tester", "user", "alice", "unlock"),
        ("cli:tester", "user", "bob", "remove"),
    ]
    assert entries[2][3] == {"change": "role", "role": "auditor", "was": "reviewer"}
    assert entries[4][3]["failures"] == 5
    audit_bytes = file_bytes(agent.tmp / "audit.sqlite")
    for password in (GOOD, OTHER, "a third passphrase"):
        assert password.encode() not in audit_bytes


def test_a_refused_users_verb_is_one_line_and_records_nothing(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    def error(*argv: str, stdin: str = "") -> str:
        with pytest.raises(AuthError) as caught:
            agent.run(*argv, stdin=stdin)
        return str(caught.value)

    assert error("users", "add", "carol", "--role", "admin", "--password-stdin", stdin="too short\n") == (
        "the password for 'carol' is too short; it needs at least 12 characters"
    )
    assert error("users", "add", "bad name", "--role", "admin", "--password-stdin", stdin=GOOD) == (
        "user name 'bad name' must be 1-64 characters of a-z, 0-9, '.', '_' and '-'"
    )
    assert error("users", "passwd", "nobody", "--password-stdin", stdin=GOOD) == "there is no user 'nobody'"
    assert error("users", "remove", "nobody") == "there is no user 'nobody'"
    typed = iter([GOOD, OTHER])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(typed))
    assert error("users", "add", "carol", "--role", "admin") == (
        "the two passwords typed for 'carol' differ; nothing was changed"
    )
    assert not (agent.tmp / "audit.sqlite").exists()
    agent.run("users", "add", "carol", "--role", "admin", "--password-stdin", stdin=GOOD)
    assert error("users", "add", "carol", "--role", "admin", "--password-stdin", stdin=GOOD) == (
        "user 'carol' already exists"
    )
    assert len(agent.audit()) == 1


def test_a_password_typed_twice_at_the_terminal_is_used(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    prompts: list[str] = []

    def typed(prompt: str) -> str:
        prompts.append(prompt)
        return GOOD

    monkeypatch.setattr("getpass.getpass", typed)
    assert agent.run("users", "add", "dave", "--role", "auditor")[0] == 0
    assert prompts == ["new password for dave: ", "the same password for dave again: "]
    with UserStore(agent.tmp / "web-users.sqlite") as store:
        assert store.login("dave", GOOD).user.role == "auditor"
