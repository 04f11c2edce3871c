"""`lambdad accounts`: create and list accounts (an admin command on the data dir, not an API call).

It writes the data dir's database directly; a running server sees a new account on the first
request its key signs. The secret access key is printed once, at creation, and never again.
"""

from __future__ import annotations

import argparse
import datetime
import os
from pathlib import Path
from typing import Any

import orjson

from lambdad.settings import DEFAULT_ACCOUNT_ID, Settings, default_data_dir


def register(subparsers: Any) -> None:
    """Add `accounts create` and `accounts ls` to `lambdad`'s subparsers."""
    parser = subparsers.add_parser("accounts", help="create and list accounts", description=__doc__)
    commands = parser.add_subparsers(dest="accounts_command", required=True)
    create = commands.add_parser("create", help="create an account and its access key")
    create.add_argument("name", help="a name for the account (letters, digits, . _ -)")
    _data_dir_argument(create)
    create.add_argument("--json", action="store_true", help="print the new account as JSON")
    create.set_defaults(func=run_create)
    listing = commands.add_parser("ls", help="list the accounts (never their secrets)")
    _data_dir_argument(listing)
    listing.add_argument("--json", action="store_true", help="print the accounts as JSON")
    listing.set_defaults(func=run_ls)


def _data_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", default=None, help="default: $LAMBDAD_DATA_DIR or ~/.local/share/lambdad"
    )


def _db_path(args: argparse.Namespace) -> Path:
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir(dict(os.environ))
    return Settings(data_dir=data_dir).db_path


def run_create(args: argparse.Namespace) -> int:
    from lambdad.cli.output import error, write_stdout
    from lambdad.control.accounts import InvalidAccountName, create_account
    from lambdad.store.accounts import AccountExists, SqliteAccountStore

    store = SqliteAccountStore(_db_path(args))
    try:
        account = create_account(store, args.name, reserved_ids=(DEFAULT_ACCOUNT_ID,))
    except InvalidAccountName as exc:
        error("InvalidAccountName", str(exc))
        return 1
    except AccountExists:
        error("AccountExists", f"an account named {args.name!r} already exists")
        return 1
    finally:
        store.close()
    if args.json:
        document = {
            "AccountId": account.account_id,
            "Name": account.name,
            "AccessKeyId": account.access_key_id,
            "SecretAccessKey": account.secret_access_key,
        }
        write_stdout(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    write_stdout(
        f"account {account.name} created\n"
        f"account id:    {account.account_id}\n"
        f"access key id: {account.access_key_id}\n"
        "the secret access key is shown once, now; use the account with:\n"
        f"export AWS_ACCESS_KEY_ID={account.access_key_id}\n"
        f"export AWS_SECRET_ACCESS_KEY={account.secret_access_key}\n"
    )
    return 0


def run_ls(args: argparse.Namespace) -> int:
    from rich.table import Table

    from lambdad.cli.output import note, print_table, write_stdout
    from lambdad.store.accounts import SqliteAccountStore

    store = SqliteAccountStore(_db_path(args))
    try:
        accounts = store.accounts()
    finally:
        store.close()
    rows = [(a.account_id, a.name, a.access_key_id, _created(a.created_at)) for a in accounts]
    if args.json:
        keys = ("AccountId", "Name", "AccessKeyId", "Created")
        document = {"Accounts": [dict(zip(keys, row, strict=True)) for row in rows]}
        write_stdout(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    if not rows:
        note(f"no accounts besides the default one ({DEFAULT_ACCOUNT_ID}, the root credentials)")
        return 0
    table = Table("Account ID", "Name", "Access key ID", "Created", header_style="bold")
    for row in rows:
        table.add_row(*row)
    print_table(table)
    return 0


def _created(epoch: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
