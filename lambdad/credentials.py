"""Root credentials (MinIO-style) and the server's own signing secret, kept in the data dir."""

from __future__ import annotations

import os
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

ROOT_FILE = "root-credentials.json"
SECRET_FILE = "server-secret"


@dataclass(frozen=True)
class RootCredentials:
    access_key_id: str
    secret_access_key: str
    generated: bool = False  # True when this start created them (print the export lines)

    def export_lines(self) -> str:
        return (
            f"export AWS_ACCESS_KEY_ID={self.access_key_id}\n"
            f"export AWS_SECRET_ACCESS_KEY={self.secret_access_key}\n"
        )


def generate_access_key_id() -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16))


def generate_secret_access_key() -> str:
    alphabet = string.ascii_letters + string.digits + "+/"
    return "".join(secrets.choice(alphabet) for _ in range(40))


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def load_root_credentials(data_dir: Path, environ: Mapping[str, str]) -> RootCredentials:
    """From LAMBDAD_ROOT_ACCESS_KEY_ID/SECRET, else the data dir, else generated once and stored."""
    key = environ.get("LAMBDAD_ROOT_ACCESS_KEY_ID")
    secret = environ.get("LAMBDAD_ROOT_SECRET_ACCESS_KEY")
    if key and secret:
        return RootCredentials(key, secret)
    path = data_dir / ROOT_FILE
    if path.exists():
        stored = orjson.loads(path.read_bytes())
        return RootCredentials(stored["AccessKeyId"], stored["SecretAccessKey"])
    created = RootCredentials(generate_access_key_id(), generate_secret_access_key(), True)
    _write_private(
        path,
        orjson.dumps(
            {"AccessKeyId": created.access_key_id, "SecretAccessKey": created.secret_access_key}
        ),
    )
    return created


def read_stored_root_credentials(data_dir: Path) -> RootCredentials | None:
    path = data_dir / ROOT_FILE
    if not path.exists():
        return None
    stored = orjson.loads(path.read_bytes())
    return RootCredentials(stored["AccessKeyId"], stored["SecretAccessKey"])


def server_secret(data_dir: Path) -> bytes:
    """A random key for signing the server's own URLs (code downloads); stable across restarts."""
    path = data_dir / SECRET_FILE
    if path.exists():
        return path.read_bytes()
    secret = secrets.token_bytes(32)
    _write_private(path, secret)
    return secret
