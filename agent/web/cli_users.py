"""``linerec-agent users ...``: add, list, re-password, re-role, unlock and remove the web app's users.

A password is typed twice at the terminal (``getpass``), or read as one line from
standard input with ``--password-stdin`` for scripts. Every verb that changes a user
records ``Action.USER`` in the audit log, naming the user and what changed (never the
password), after the input has been checked and before the change is made.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.web.users import ROLES, AuthError, UserStore, check_name, check_password, check_role

if TYPE_CHECKING:
    from agent.cli_common import Context
    from agent.config import AgentConfig


def users_path(cfg: AgentConfig) -> Path:
    """The web app's user store: ``web-users.sqlite`` beside the archive folder (with the audit log)."""
    return cfg.agent.state_dir / "web-users.sqlite"


def add_users_parser(sub: Any) -> None:
    """Add ``users`` and its verbs to the agent's subcommands (each sets ``verb`` to ``"users <name>"``)."""
    users = sub.add_parser("users", help="the web app's users: add, list, passwd, role, unlock, remove")
    verbs = users.add_subparsers(dest="users_command", required=True)
    add = verbs.add_parser("add", help="add a user who may sign in to the web app")
    add.add_argument("name", help="1-64 of a-z 0-9 . _ - (lower-cased)")
    add.add_argument("--role", required=True, choices=ROLES, help="what the user may do")
    listing = verbs.add_parser("list", help="every user, with role and lock")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    passwd = verbs.add_parser("passwd", help="set a user's password (ends the user's sessions)")
    passwd.add_argument("name")
    role = verbs.add_parser("role", help="change a user's role (ends the user's sessions)")
    role.add_argument("name")
    role.add_argument("role", choices=ROLES)
    verbs.add_parser("unlock", help="end a lock after failed sign-ins").add_argument("name")
    verbs.add_parser("remove", help="remove a user and the user's sessions").add_argument("name")
    for verb in ("add", "passwd"):
        verbs.choices[verb].add_argument(
            "--password-stdin", action="store_true", help="read the password as one line from standard input"
        )
    for name, parser in verbs.choices.items():
        parser.set_defaults(verb=f"users {name}")


def read_password(args: argparse.Namespace, name: str) -> str:
    """The new password for ``name``: one line of stdin, or typed twice; checked against the policy."""
    if args.password_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    else:
        password = getpass.getpass(f"new password for {name}: ")
        if getpass.getpass(f"the same password for {name} again: ") != password:
            msg = f"the two passwords typed for {name!r} differ; nothing was changed"
            raise AuthError(msg)
    check_password(name, password)
    return password


def _store(ctx: Context) -> UserStore:
    return UserStore(users_path(ctx.cfg))


def verb_add(ctx: Context, args: argparse.Namespace) -> int:
    """``users add NAME --role ROLE``."""
    from agent.audit import Action  # noqa: PLC0415

    name, role = check_name(args.name), check_role(args.role)
    with _store(ctx) as store:
        if name in {user.name for user in store.users()}:
            msg = f"user {name!r} already exists"
            raise AuthError(msg)
        password = read_password(args, name)
        ctx.record(Action.USER, name, {"change": "add", "role": role})
        store.add(name, role, password)
    ctx.say(f"added {name} ({role})")
    return 0


def verb_list(ctx: Context, args: argparse.Namespace) -> int:
    """``users list [--json]``: changes nothing, so records nothing."""
    with _store(ctx) as store:
        users = store.users()
    for user in users:
        if args.json:
            ctx.emit(
                {
                    "name": user.name,
                    "role": user.role,
                    "created_at": user.created_at,
                    "locked_until": user.locked_until,
                    "failures": user.failures,
                }
            )
        else:
            lock = f"locked until {user.locked_until}" if user.locked_until else f"{user.failures} failed sign-ins"
            ctx.say(f"{user.name:<24} {user.role:<9} since {user.created_at}  {lock}")
    return 0


def verb_passwd(ctx: Context, args: argparse.Namespace) -> int:
    """``users passwd NAME``: a new password; the user's sessions end."""
    from agent.audit import Action  # noqa: PLC0415

    with _store(ctx) as store:
        name = store.get(args.name).name
        password = read_password(args, name)
        ctx.record(Action.USER, name, {"change": "password"})
        store.set_password(name, password)
    ctx.say(f"new password for {name}; the user's sessions have ended")
    return 0


def verb_role(ctx: Context, args: argparse.Namespace) -> int:
    """``users role NAME ROLE``: the user's sessions end."""
    from agent.audit import Action  # noqa: PLC0415

    role = check_role(args.role)
    with _store(ctx) as store:
        user = store.get(args.name)
        ctx.record(Action.USER, user.name, {"change": "role", "role": role, "was": user.role})
        store.set_role(user.name, role)
    ctx.say(f"{user.name} is now {role} (was {user.role}); the user's sessions have ended")
    return 0


def verb_unlock(ctx: Context, args: argparse.Namespace) -> int:
    """``users unlock NAME``: the lock ends and the failed sign-ins are forgotten."""
    from agent.audit import Action  # noqa: PLC0415

    with _store(ctx) as store:
        user = store.get(args.name)
        details = {"change": "unlock", "locked_until": user.locked_until, "failures": user.failures}
        ctx.record(Action.USER, user.name, details)
        store.unlock(user.name)
    ctx.say(f"unlocked {user.name}")
    return 0


def verb_remove(ctx: Context, args: argparse.Namespace) -> int:
    """``users remove NAME``: the user and the user's sessions."""
    from agent.audit import Action  # noqa: PLC0415

    with _store(ctx) as store:
        user = store.get(args.name)
        ctx.record(Action.USER, user.name, {"change": "remove", "role": user.role})
        store.remove(user.name)
    ctx.say(f"removed {user.name}")
    return 0


HANDLERS: dict[str, Callable[[Context, argparse.Namespace], int]] = {
    "users add": verb_add,
    "users list": verb_list,
    "users passwd": verb_passwd,
    "users role": verb_role,
    "users unlock": verb_unlock,
    "users remove": verb_remove,
}
