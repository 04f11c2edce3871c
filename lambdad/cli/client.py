"""How the `lambdad` subcommands find the server and sign their requests.

Everything the CLI knows about its environment is resolved here, once, from the parsed
arguments and the process environment, into a frozen `Target`:

- endpoint: ``--endpoint-url``, else ``LAMBDAD_ENDPOINT_URL``, else ``http://127.0.0.1:9000``;
- region: ``--region``, else ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, else ``us-east-1``;
- credentials: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (and ``AWS_SESSION_TOKEN``),
  else the root credentials stored in the data dir (``--data-dir`` / ``LAMBDAD_DATA_DIR``),
  else ``LAMBDAD_ROOT_ACCESS_KEY_ID`` / ``LAMBDAD_ROOT_SECRET_ACCESS_KEY``.

Error hierarchy of this module::

    CliError                  a message for the user; the command exits 1
    ├── NoCredentialsError    no source above gave credentials
    ├── ServerUnreachable     nothing answers at the endpoint
    └── StatusRefused         the server refused the status request (AWS error code, message)
"""

from __future__ import annotations

import argparse
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import botocore.session
import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials as BotocoreCredentials

from lambdad.credentials import read_stored_root_credentials
from lambdad.settings import DEFAULT_ACCOUNT_ID, DEFAULT_PORT, DEFAULT_REGION, default_data_dir

DEFAULT_ENDPOINT = f"http://127.0.0.1:{DEFAULT_PORT}"
STATUS_PATH = "/_lambdad/status"  # lambdad.api.app.STATUS_PATH (the CLI does not import the server)
# The longest a function may run (900 s) plus room for a cold start and the network.
INVOKE_READ_TIMEOUT = 960
API_READ_TIMEOUT = 300


class CliError(Exception):
    """A failure the user can act on; printed in red, exit status 1."""


class NoCredentialsError(CliError):
    pass


class ServerUnreachable(CliError):
    pass


class StatusRefused(CliError):
    """The server answered the status request with an error (usually 403: credentials)."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None
    source: str  # where they came from, for `lambdad doctor`


@dataclass(frozen=True)
class Target:
    """The server a command talks to, and who it is talking as."""

    endpoint: str
    region: str
    data_dir: Path
    credentials: Credentials | None

    def require_credentials(self) -> Credentials:
        if self.credentials is None:
            raise NoCredentialsError(
                "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or point "
                f"--data-dir at the server's data dir (looked in {self.data_dir})"
            )
        return self.credentials


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every subcommand shares; defaults are resolved later by `resolve_target`."""
    group = parser.add_argument_group("server")
    group.add_argument(
        "--endpoint-url",
        default=None,
        help=f"lambdad's URL (default: $LAMBDAD_ENDPOINT_URL or {DEFAULT_ENDPOINT})",
    )
    group.add_argument(
        "--region",
        default=None,
        help=f"default: $AWS_REGION, $AWS_DEFAULT_REGION or {DEFAULT_REGION}",
    )
    group.add_argument(
        "--data-dir",
        default=None,
        help="where to find stored root credentials (default: $LAMBDAD_DATA_DIR or "
        "~/.local/share/lambdad)",
    )


def resolve_target(args: argparse.Namespace, environ: Mapping[str, str]) -> Target:
    env = dict(environ)
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir(env)
    return Target(
        endpoint=(args.endpoint_url or env.get("LAMBDAD_ENDPOINT_URL") or DEFAULT_ENDPOINT).rstrip(
            "/"
        ),
        region=args.region
        or env.get("AWS_REGION")
        or env.get("AWS_DEFAULT_REGION")
        or DEFAULT_REGION,
        data_dir=data_dir,
        credentials=resolve_credentials(env, data_dir),
    )


def resolve_credentials(environ: Mapping[str, str], data_dir: Path) -> Credentials | None:
    key, secret = environ.get("AWS_ACCESS_KEY_ID"), environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return Credentials(key, secret, environ.get("AWS_SESSION_TOKEN") or None, "environment")
    stored = _stored_credentials(data_dir)
    if stored is not None:
        return stored
    key = environ.get("LAMBDAD_ROOT_ACCESS_KEY_ID")
    secret = environ.get("LAMBDAD_ROOT_SECRET_ACCESS_KEY")
    if key and secret:
        return Credentials(key, secret, None, "LAMBDAD_ROOT_* environment")
    return None


def _stored_credentials(data_dir: Path) -> Credentials | None:
    try:
        stored = read_stored_root_credentials(data_dir)
    except (OSError, ValueError, KeyError):  # unreadable or malformed: try the next source
        return None
    if stored is None:
        return None
    return Credentials(stored.access_key_id, stored.secret_access_key, None, f"data dir {data_dir}")


def make_client(
    target: Target, service: str, *, read_timeout: int = API_READ_TIMEOUT, attempts: int = 2
) -> Any:
    """A botocore client for `service` ("lambda" or "logs") pointed at the lambdad server."""
    credentials = target.require_credentials()
    session = botocore.session.get_session()
    return session.create_client(
        service,
        endpoint_url=target.endpoint,
        region_name=target.region,
        aws_access_key_id=credentials.access_key_id,
        aws_secret_access_key=credentials.secret_access_key,
        aws_session_token=credentials.session_token,
        config=Config(
            connect_timeout=5,
            read_timeout=read_timeout,
            retries={"mode": "standard", "max_attempts": attempts},
        ),
    )


def fetch_status(target: Target, timeout: float = 5.0) -> dict[str, Any]:
    """lambdad's own status document (isolation, runtimes, pools, the caller's account).

    Signed with SigV4 like any API call (scope ``lambda``); sent unsigned when the CLI has no
    credentials, so that the answer still tells a running server from none at all.
    """
    url = target.endpoint + STATUS_PATH
    try:
        with urllib.request.urlopen(_status_request(target, url), timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        raise _refusal(url, error) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ServerUnreachable(
            f"lambdad is not reachable at {target.endpoint}: {reason}"
        ) from None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise CliError(f"{url} did not answer JSON: is this a lambdad server?") from None
    if not isinstance(document, dict):
        raise CliError(f"{url} answered an unexpected document")
    return cast(dict[str, Any], document)


def _status_request(target: Target, url: str) -> urllib.request.Request:
    if target.credentials is None:
        return urllib.request.Request(url)
    credentials = target.credentials
    request = AWSRequest(method="GET", url=url)
    signer = SigV4Auth(
        BotocoreCredentials(
            credentials.access_key_id, credentials.secret_access_key, credentials.session_token
        ),
        "lambda",
        target.region,
    )
    signer.add_auth(request)
    return urllib.request.Request(url, headers=dict(request.headers.items()))


def _refusal(url: str, error: urllib.error.HTTPError) -> StatusRefused:
    """The server answered, but not with the status document (an AWS error, usually 403)."""
    code = (error.headers.get("x-amzn-ErrorType") or "").split(":")[0]
    try:
        document = orjson.loads(error.read())
    except (orjson.JSONDecodeError, OSError):
        document = None
    message = ""
    if isinstance(document, dict):
        message = str(document.get("message") or document.get("Message") or "")
    if not code:
        code, message = f"HTTP{error.code}", f"{url} answered HTTP {error.code}"
    return StatusRefused(code, message, error.code)


def account_id(target: Target) -> str:
    """The caller's account id, from the status document; AWS's placeholder when unknown."""
    try:
        return str(fetch_status(target).get("accountId") or DEFAULT_ACCOUNT_ID)
    except CliError:
        return DEFAULT_ACCOUNT_ID
