"""SigV4 authentication and account isolation against a real `lambdad serve`."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.conftest import (
    ROOT,
    Server,
    create_function,
    module_server,
    unique_name,
    wait_for,
)

MARKER_CODE = """
def handler(event, context):
    print("account-marker " + event["marker"])
    return {"marker": event["marker"]}
"""


def client(server: Server, key: str, secret: str, service: str = "lambda") -> Any:
    return boto3.client(
        service,
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}, read_timeout=120),
    )


def refused(call: Callable[[], object], code: str) -> str:
    with pytest.raises(ClientError) as info:
        call()
    error = info.value.response["Error"]
    assert error["Code"] == code, error
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    return str(error["Message"])


def lambdad(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lambdad.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )


def create_account(server: Server, name: str) -> dict[str, str]:
    result = lambdad("accounts", "create", name, "--data-dir", str(server.data_dir), "--json")
    account: dict[str, str] = json.loads(result.stdout)
    return account


def signed_get(server: Server, path: str, key: str, secret: str) -> dict[str, Any]:
    request = AWSRequest(method="GET", url=server.endpoint + path)
    SigV4Auth(Credentials(key, secret), "lambda", "us-east-1").add_auth(request)
    urllib_request = urllib.request.Request(request.url, headers=dict(request.headers.items()))
    with urllib.request.urlopen(urllib_request, timeout=10) as response:
        document: dict[str, Any] = json.loads(response.read())
        return document


def root_keys(server: Server) -> tuple[str, str]:
    return server.env["LAMBDAD_ROOT_ACCESS_KEY_ID"], server.env["LAMBDAD_ROOT_SECRET_ACCESS_KEY"]


# -- the root key, and what is refused ---------------------------------------------------------


def test_root_key_is_accepted(lam: Any, server: Server) -> None:
    assert "Functions" in lam.list_functions()
    status = signed_get(server, "/_lambdad/status", *root_keys(server))
    assert status["accountId"] == "000000000000"


def test_wrong_secret_is_invalid_signature(server: Server) -> None:
    key, _ = root_keys(server)
    wrong = client(server, key, "x" * 40)
    message = refused(wrong.list_functions, "InvalidSignatureException")
    assert message.startswith("The request signature we calculated does not match")
    logs = client(server, key, "x" * 40, "logs")
    refused(logs.describe_log_groups, "InvalidSignatureException")


def test_unknown_key_is_unrecognized_client(server: Server) -> None:
    stranger = client(server, "AKIASTRANGERSTRANGER", "y" * 40)
    message = refused(stranger.list_functions, "UnrecognizedClientException")
    assert message == "The security token included in the request is invalid."
    logs = client(server, "AKIASTRANGERSTRANGER", "y" * 40, "logs")
    refused(logs.describe_log_groups, "UnrecognizedClientException")


@pytest.mark.parametrize("path", ["/2015-03-31/functions/", "/_lambdad/status"])
def test_unsigned_request_is_missing_authentication_token(server: Server, path: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(server.endpoint + path, timeout=10)
    assert info.value.code == 403
    assert info.value.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert json.loads(info.value.read()) == {"message": "Missing Authentication Token"}
    info.value.close()


def test_unsigned_logs_request_has_the_json_1_1_error_shape(server: Server) -> None:
    request = urllib.request.Request(
        server.endpoint + "/",
        data=b"{}",
        headers={
            "X-Amz-Target": "Logs_20140328.DescribeLogGroups",
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 403
    assert json.loads(info.value.read()) == {
        "__type": "MissingAuthenticationTokenException",
        "message": "Missing Authentication Token",
    }
    info.value.close()


def test_request_signed_twenty_minutes_ago_has_expired(lam: Any) -> None:
    past = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(minutes=20)
    with mock.patch("botocore.auth.get_current_datetime", return_value=past):
        message = refused(lam.list_functions, "InvalidSignatureException")
    assert message.startswith(f"Signature expired: {past:%Y%m%dT%H%M%SZ} is now earlier than ")
    assert message.endswith(" - 15 min.)")


def test_presigned_url_works_with_a_plain_http_client(lam: Any) -> None:
    name = create_function(lam, {"app.py": MARKER_CODE})
    arn = lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
    url = lam.generate_presigned_url(
        "get_function", Params={"FunctionName": f"{arn}:$LATEST"}, ExpiresIn=300
    )
    with urllib.request.urlopen(url, timeout=10) as response:
        assert json.loads(response.read())["Configuration"]["FunctionName"] == name


# -- a second account ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def team(server: Server) -> dict[str, str]:
    return create_account(server, unique_name("team"))


@pytest.fixture(scope="module")
def team_lam(server: Server, team: dict[str, str]) -> Any:
    return client(server, team["AccessKeyId"], team["SecretAccessKey"])


def test_new_account_has_aws_shaped_ids_and_is_listed_without_secret(
    server: Server, team: dict[str, str]
) -> None:
    assert len(team["AccountId"]) == 12 and team["AccountId"].isdigit()
    assert team["AccessKeyId"].startswith("AKIA") and len(team["AccessKeyId"]) == 20
    assert len(team["SecretAccessKey"]) == 40
    listing = lambdad("accounts", "ls", "--data-dir", str(server.data_dir), "--json").stdout
    assert team["Name"] in listing and team["AccessKeyId"] in listing
    assert team["SecretAccessKey"] not in listing
    table = lambdad("accounts", "ls", "--data-dir", str(server.data_dir)).stdout
    assert team["AccountId"] in table and team["SecretAccessKey"] not in table


def test_accounts_are_isolated(
    server: Server, lam: Any, team: dict[str, str], team_lam: Any
) -> None:
    name = unique_name("shared")
    create_function(lam, {"app.py": MARKER_CODE}, name=name)
    create_function(team_lam, {"app.py": MARKER_CODE}, name=name)

    root_arn = lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
    team_arn = team_lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
    assert root_arn == f"arn:aws:lambda:us-east-1:000000000000:function:{name}"
    assert team_arn == f"arn:aws:lambda:us-east-1:{team['AccountId']}:function:{name}"

    team_names = [f["FunctionName"] for f in team_lam.list_functions()["Functions"]]
    assert team_names == [name]
    # Another account's function, by its full or partial ARN, existing or not: AWS's 403 (no
    # resource-based policy lets the caller act on it), never a look-up among the caller's own.
    team_id = team["AccountId"]
    cases = [
        (lambda: team_lam.get_function(FunctionName=root_arn), "GetFunction", root_arn),
        (lambda: team_lam.invoke(FunctionName=root_arn, Payload=b"{}"), "InvokeFunction", root_arn),
        (lambda: team_lam.delete_function(FunctionName=root_arn), "DeleteFunction", root_arn),
        (lambda: team_lam.list_tags(Resource=root_arn), "ListTags", root_arn),
        (
            lambda: team_lam.get_function(FunctionName=f"000000000000:function:{name}"),
            "GetFunction",
            f"000000000000:function:{name}",
        ),
        (
            lambda: team_lam.get_function(FunctionName=f"{root_arn}-missing"),
            "GetFunction",
            f"{root_arn}-missing",
        ),
    ]
    for call, action, resource in cases:
        with pytest.raises(ClientError) as info:
            call()
        assert info.value.response["Error"]["Code"] == "AccessDeniedException"
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert info.value.response["Error"]["Message"] == (
            f"User: arn:aws:iam::{team_id}:root is not authorized to perform: lambda:{action} on "
            f"resource: {resource} because no resource-based policy allows the lambda:{action} "
            "action"
        )
    assert lam.get_function(FunctionName=root_arn)["Configuration"]["FunctionArn"] == root_arn
    own = team_lam.get_function(FunctionName=team_arn)  # its own ARN: its own function
    assert own["Configuration"]["FunctionArn"] == team_arn

    status = signed_get(server, "/_lambdad/status", team["AccessKeyId"], team["SecretAccessKey"])
    assert status["accountId"] == team["AccountId"]


def test_account_logs_are_separate(
    server: Server, lam: Any, team: dict[str, str], team_lam: Any
) -> None:
    name = unique_name("logged")
    for owner, marker in ((lam, "root-side"), (team_lam, "team-side")):
        create_function(owner, {"app.py": MARKER_CODE}, name=name)
        owner.invoke(FunctionName=name, Payload=json.dumps({"marker": marker}))
    root_logs = server.client("logs")
    team_logs = client(server, team["AccessKeyId"], team["SecretAccessKey"], "logs")

    def markers(logs: Any) -> set[str]:
        events = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}")["events"]
        return {e["message"].split()[1] for e in events if e["message"].startswith("account-")}

    assert wait_for(lambda: markers(root_logs) == {"root-side"})
    assert wait_for(lambda: markers(team_logs) == {"team-side"})
    team_groups = team_logs.describe_log_groups()["logGroups"]
    assert [g["logGroupName"] for g in team_groups] == [f"/aws/lambda/{name}"]


# -- development mode ----------------------------------------------------------------------------


open_server = module_server("lambdad-open", "--allow-any-credentials")


def test_allow_any_credentials_accepts_a_random_key(open_server: Server) -> None:
    anyone = client(open_server, "AKIARANDOMRANDOMRAND", "z" * 40)
    assert anyone.list_functions()["Functions"] == []
    assert client(open_server, "AKIARANDOMRANDOMRAND", "z" * 40, "logs").describe_log_groups()
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(open_server.endpoint + "/2015-03-31/functions/", timeout=10)
    assert info.value.code == 403
    info.value.close()
    assert wait_for(lambda: "--allow-any-credentials" in open_server.output())
    assert "WARNING: --allow-any-credentials" in open_server.output()
