"""Who may sign in to the review web app: users, roles, passwords, lockout and sessions.

Everything lives in its own SQLite file (WAL, ``synchronous = FULL``, mode 0600,
``BEGIN IMMEDIATE`` for every write), marked with ``PRAGMA application_id`` and
versioned with ``PRAGMA user_version``, so the web app, the CLI and several worker
processes may share it.

Rules, in one place:

* **Names**: 1-64 of ``a-z 0-9 . _ -``; a name is lower-cased before it is checked.
* **Roles**: ``admin``, ``reviewer``, ``auditor``; :data:`PERMISSIONS` says what each may do.
* **Passwords**: at least 12 and at most 1024 characters, and not the user name.
  They are stored only as argon2id hashes (``argon2.PasswordHasher``'s defaults); a
  hash made with older parameters is replaced at the next successful sign-in.
* **Lockout**: ``max_failures`` wrong passwords in a row lock the account for
  ``lockout_s``. While it is locked every sign-in is refused, even with the right
  password (which neither unlocks nor extends the lock); a wrong password while it is
  locked extends the lock to ``lockout_s`` from then, so guessing never pays. When a
  lock has run out the count starts again from zero; a successful sign-in resets it.
  Counts and locks are in the database, so a restart unlocks nothing.
* **Unknown users** cost the same as known ones (a verification against a dummy
  hash) and get the same message, so user names cannot be probed by the answer or its
  time. (A locked account does say that it is locked: its owner must be told why.)
* **Sessions**: the token is ``secrets.token_urlsafe(32)`` and only its SHA-256 is
  stored, so a copy of the file opens no session. Each session has its own CSRF
  token. A session ends after ``idle_s`` without use, ``absolute_s`` after sign-in, on
  logout, and when its user's password or role changes, the user is removed or the
  account is locked.

This module decides and stores; it records nothing in the audit log. The web app and
the CLI record ``Action.LOGIN``, ``Action.LOGIN_FAILED`` and ``Action.USER``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from agent.errors import AgentError

ROLES = ("admin", "reviewer", "auditor")
PERMISSIONS: dict[str, frozenset[str]] = {
    # admin: users, devices and retention, and everything a reviewer does
    "admin": frozenset({"search", "listen", "annotate", "export", "admin", "audit"}),
    "reviewer": frozenset({"search", "listen", "annotate", "export"}),
    "auditor": frozenset({"search", "audit"}),
}
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
SCHEMA_VERSION = 1
APPLICATION_ID = 0x4C525755  # "LRWU" in the SQLite header marks a linerec web user store
WRONG = "wrong user name or password"
_NAME = re.compile(r"[a-z0-9._-]{1,64}")
_SCHEMA = """
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        hash TEXT NOT NULL,
        created_at REAL NOT NULL,
        failures INTEGER NOT NULL DEFAULT 0,
        locked_until REAL
    );
    CREATE TABLE sessions (
        token_sha256 TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        csrf TEXT NOT NULL,
        created_at REAL NOT NULL,
        last_seen REAL NOT NULL
    );
    CREATE INDEX sessions_by_name ON sessions (name);
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO counters VALUES ('unknown_sign_ins', 0);
"""


def can(role: str, permission: str) -> bool:
    """Whether ``role`` may do ``permission``; False for a role or permission nobody has."""
    return permission in PERMISSIONS.get(role, frozenset())


class AuthError(AgentError, ValueError):
    """A user, role or password that cannot be used as given, or a store that cannot be opened."""


class LoginRefused(AgentError):
    """A refused sign-in; its text is safe to show to whoever tried."""


@dataclass(frozen=True)
class User:
    """A user as stored, without the password hash; times are UTC ``2024-03-05T14:00:00Z``."""

    name: str
    role: str
    created_at: str
    locked_until: str | None  # None unless locked now
    failures: int  # wrong passwords in a row (0 once a lock has run out)


@dataclass(frozen=True)
class Session:
    """A signed-in user; ``token`` goes in the cookie, ``csrf`` in the forms. Times are the clock's seconds."""

    token: str
    user: User
    csrf: str
    created_at: float
    last_seen: float


def check_name(name: str) -> str:
    """``name`` lower-cased, if it is a valid user name; AuthError otherwise."""
    folded = name.lower() if isinstance(name, str) else ""
    if not _NAME.fullmatch(folded):
        msg = f"user name {name!r} must be 1-64 characters of a-z, 0-9, '.', '_' and '-'"
        raise AuthError(msg)
    return folded


def check_role(role: str) -> str:
    """``role`` if it is one of :data:`ROLES`; AuthError otherwise."""
    if role not in ROLES:
        msg = f"role {role!r} is not one of: {', '.join(ROLES)}"
        raise AuthError(msg)
    return role


def check_password(name: str, password: str) -> None:
    """AuthError saying what is needed unless ``password`` is 12-1024 characters and not the user name."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        msg = f"the password for {name!r} is too short; it needs at least {MIN_PASSWORD} characters"
        raise AuthError(msg)
    if len(password) > MAX_PASSWORD:
        msg = f"the password for {name!r} is too long; at most {MAX_PASSWORD} characters are allowed"
        raise AuthError(msg)
    if password.lower() == name.lower():
        msg = f"the password for {name!r} must not be the user name"
        raise AuthError(msg)


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class UserStore:
    """The web app's users and sessions in one SQLite file; safe to share between threads and processes."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        max_failures: int = 5,
        lockout_s: float = 900.0,
        idle_s: float = 1800.0,
        absolute_s: float = 43200.0,
    ) -> None:
        for label, value in (("lockout_s", lockout_s), ("idle_s", idle_s), ("absolute_s", absolute_s)):
            if not value > 0:
                msg = f"{label} {value!r} must be a number of seconds above 0"
                raise AuthError(msg)
        if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 1:
            msg = f"max_failures {max_failures!r} must be a whole number from 1"
            raise AuthError(msg)
        self.path = Path(path)
        self._clock = clock
        self._max_failures = max_failures
        self._lockout_s = float(lockout_s)
        self._idle_s = float(idle_s)
        self._absolute_s = float(absolute_s)
        self._hasher = PasswordHasher()
        self._dummy: str | None = None
        self._lock = threading.RLock()
        self._db = self._connect()
        try:
            self._open_schema()
        except sqlite3.Error as exc:
            self._db.close()
            msg = f"{self.path} is not a linerec web user store ({exc})"
            raise AuthError(msg) from None
        except AuthError:
            self._db.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # A new file is the owner's alone; SQLite gives its WAL files the same mode.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError as exc:
            msg = f"cannot create the web user store {self.path}: {exc.strerror}"
            raise AuthError(msg) from None
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            msg = f"cannot open the web user store {self.path}: {exc}"
            raise AuthError(msg) from None
        db.execute("PRAGMA busy_timeout = 10000")
        return db

    def _identity(self) -> tuple[int, int]:
        app_id = int(self._db.execute("PRAGMA application_id").fetchone()[0])
        return app_id, int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _is_blank(self) -> bool:
        return self._db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is None

    def _open_schema(self) -> None:
        if self._identity()[0] == 0 and self._is_blank():
            self._db.execute("PRAGMA journal_mode = WAL")
            # Decided under the write lock: of several processes opening a new file, one creates it.
            with self._write() as db:
                if self._identity() == (0, 0) and self._is_blank():
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        app_id, version = self._identity()
        if app_id != APPLICATION_ID:
            msg = f"{self.path} is not a linerec web user store (it is some other SQLite database)"
            raise AuthError(msg)
        if version > SCHEMA_VERSION:
            msg = (
                f"web user store {self.path} has schema version {version};"
                f" this agent knows versions up to {SCHEMA_VERSION}"
            )
            raise AuthError(msg)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under SQLite's write lock (and this object's, for threads)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Close the store; the object cannot be used afterwards."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- users ---------------------------------------------------------------------------

    def _row(self, db: sqlite3.Connection, name: str) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = db.execute(
            "SELECT name, role, hash, created_at, failures, locked_until FROM users WHERE name = ?", (name,)
        ).fetchone()
        return row

    def _user(self, row: tuple[Any, ...], now: float) -> User:
        name, role, _hash, created_at, failures, locked_until = row
        if locked_until is not None and locked_until <= now:
            return User(name, role, _utc(created_at), None, 0)
        return User(name, role, _utc(created_at), None if locked_until is None else _utc(locked_until), failures)

    def _existing(self, db: sqlite3.Connection, name: str) -> str:
        folded = check_name(name)
        if self._row(db, folded) is None:
            msg = f"there is no user {folded!r}"
            raise AuthError(msg)
        return folded

    def add(self, name: str, role: str, password: str) -> User:
        """A new user; AuthError for a bad name, role or password, or a name already taken."""
        name = check_name(name)
        check_role(role)
        check_password(name, password)
        digest = self._hasher.hash(password)
        with self._write() as db:
            if self._row(db, name) is not None:
                msg = f"user {name!r} already exists"
                raise AuthError(msg)
            db.execute(
                "INSERT INTO users (name, role, hash, created_at) VALUES (?, ?, ?, ?)",
                (name, role, digest, self._clock()),
            )
            row = self._row(db, name)
        assert row is not None
        return self._user(row, self._clock())

    def set_password(self, name: str, password: str) -> None:
        """Give ``name`` a new password and end its sessions."""
        folded = check_name(name)
        check_password(folded, password)
        digest = self._hasher.hash(password)
        with self._write() as db:
            self._existing(db, folded)
            db.execute("UPDATE users SET hash = ? WHERE name = ?", (digest, folded))
            db.execute("DELETE FROM sessions WHERE name = ?", (folded,))

    def set_role(self, name: str, role: str) -> None:
        """Give ``name`` a new role and end its sessions."""
        check_role(role)
        with self._write() as db:
            folded = self._existing(db, name)
            db.execute("UPDATE users SET role = ? WHERE name = ?", (role, folded))
            db.execute("DELETE FROM sessions WHERE name = ?", (folded,))

    def remove(self, name: str) -> None:
        """Remove ``name`` and its sessions."""
        with self._write() as db:
            folded = self._existing(db, name)
            db.execute("DELETE FROM sessions WHERE name = ?", (folded,))
            db.execute("DELETE FROM users WHERE name = ?", (folded,))

    def unlock(self, name: str) -> None:
        """End a lock and forget the wrong passwords counted so far."""
        with self._write() as db:
            folded = self._existing(db, name)
            db.execute("UPDATE users SET failures = 0, locked_until = NULL WHERE name = ?", (folded,))

    def get(self, name: str) -> User:
        """The user ``name``; AuthError if there is none."""
        folded = check_name(name)
        with self._lock:
            row = self._row(self._db, folded)
        if row is None:
            msg = f"there is no user {folded!r}"
            raise AuthError(msg)
        return self._user(row, self._clock())

    def users(self) -> list[User]:
        """Every user, by name."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name, role, hash, created_at, failures, locked_until FROM users ORDER BY name"
            ).fetchall()
        now = self._clock()
        return [self._user(row, now) for row in rows]

    # --- signing in ----------------------------------------------------------------------

    def _verify(self, digest: str | None, password: str) -> bool:
        if digest is None:
            # An unknown user costs one verification, like a known one.
            if self._dummy is None:
                self._dummy = self._hasher.hash(secrets.token_urlsafe(16))
            digest = self._dummy
        try:
            return self._hasher.verify(digest, password)
        except (VerificationError, InvalidHashError):
            return False

    def login(self, name: str, password: str, *, remote: str = "") -> Session:
        """A new session for ``name``; LoginRefused (safe to show) otherwise.

        ``remote`` (the client's address) is accepted for the caller's convenience and
        not stored: the caller records it in the audit log with the outcome.
        """
        try:
            folded = check_name(name)
        except AuthError:
            folded = ""
        with self._lock:
            row = self._row(self._db, folded) if folded else None
        digest = None if row is None else row[2]
        right = self._verify(digest, password if isinstance(password, str) else "")
        if row is None:
            with self._write() as db:
                # A write, as a wrong password for a known user makes, so the two take as long.
                db.execute("UPDATE counters SET value = value + 1 WHERE name = 'unknown_sign_ins'")
            raise LoginRefused(WRONG)
        with self._write() as db:
            now = self._clock()
            fresh = self._row(db, folded)
            if fresh is None or fresh[2] != digest:  # removed, or its password changed meanwhile
                raise LoginRefused(WRONG)
            failures, locked_until = fresh[4], fresh[5]
            if locked_until is not None and locked_until > now:
                if not right:
                    failures, locked_until = failures + 1, now + self._lockout_s
                    db.execute(
                        "UPDATE users SET failures = ?, locked_until = ? WHERE name = ?",
                        (failures, locked_until, folded),
                    )
                # Raised after the transaction commits, so the extended lock is kept.
                refusal = self._locked_message(locked_until, failures)
            elif not right:
                failures = 1 if locked_until is not None else failures + 1  # a lock that ran out starts anew
                locked_until = now + self._lockout_s if failures >= self._max_failures else None
                db.execute(
                    "UPDATE users SET failures = ?, locked_until = ? WHERE name = ?", (failures, locked_until, folded)
                )
                refusal = WRONG
                if locked_until is not None:
                    db.execute("DELETE FROM sessions WHERE name = ?", (folded,))
                    refusal = self._locked_message(locked_until, failures)
            else:
                return self._open_session(db, folded, password, digest, now)
        raise LoginRefused(refusal)

    @staticmethod
    def _locked_message(locked_until: float, failures: int) -> str:
        until = datetime.fromtimestamp(locked_until, UTC).strftime("%H:%M")
        return f"this account is locked until {until} UTC after {failures} failed sign-ins"

    def _open_session(self, db: sqlite3.Connection, name: str, password: str, digest: str, now: float) -> Session:
        if self._hasher.check_needs_rehash(digest):
            db.execute("UPDATE users SET hash = ? WHERE name = ?", (self._hasher.hash(password), name))
        db.execute("UPDATE users SET failures = 0, locked_until = NULL WHERE name = ?", (name,))
        # Housekeeping: sessions nobody will present again.
        db.execute(
            "DELETE FROM sessions WHERE last_seen <= ? OR created_at <= ?", (now - self._idle_s, now - self._absolute_s)
        )
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        db.execute(
            "INSERT INTO sessions (token_sha256, name, csrf, created_at, last_seen) VALUES (?, ?, ?, ?, ?)",
            (_digest(token), name, csrf, now, now),
        )
        row = self._row(db, name)
        assert row is not None
        return Session(token, self._user(row, now), csrf, now, now)

    # --- sessions ------------------------------------------------------------------------

    def session(self, token: str) -> Session | None:
        """The live session ``token`` names, with its use recorded; None (and gone) if it has ended."""
        if not isinstance(token, str) or not token:
            return None
        key = _digest(token)
        with self._write() as db:
            now = self._clock()
            found = db.execute(
                "SELECT name, csrf, created_at, last_seen FROM sessions WHERE token_sha256 = ?", (key,)
            ).fetchone()
            if found is None:
                return None
            name, csrf, created_at, last_seen = found
            row = self._row(db, name)
            ended = now - last_seen >= self._idle_s or now - created_at >= self._absolute_s
            locked = row is not None and row[5] is not None and row[5] > now
            if ended or row is None or locked:
                db.execute("DELETE FROM sessions WHERE token_sha256 = ?", (key,))
                return None
            db.execute("UPDATE sessions SET last_seen = ? WHERE token_sha256 = ?", (now, key))
        return Session(token, self._user(row, now), csrf, created_at, now)

    def logout(self, token: str) -> None:
        """End the session ``token`` names, if there is one."""
        if isinstance(token, str) and token:
            with self._write() as db:
                db.execute("DELETE FROM sessions WHERE token_sha256 = ?", (_digest(token),))

    def check_csrf(self, session: Session, token: str | None) -> bool:
        """Whether ``token`` (from a form or header) is ``session``'s CSRF token, compared in constant time."""
        if not isinstance(token, str) or not token:
            return False
        return hmac.compare_digest(session.csrf.encode(), token.encode("utf-8", "surrogatepass"))
