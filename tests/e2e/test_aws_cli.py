"""The unmodified AWS CLI (`aws --endpoint-url ... lambda ...`) against a real `lambdad serve`."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROLE, Server, make_zip, unique_name

AWS = str(Path(sys.executable).parent / "aws")
ECHO = {"app.py": "def handler(event, context):\n    print('handling', event)\n    return event\n"}
ARN = "arn:aws:lambda:us-east-1:000000000000:function:{}"
# AWS CLI v2 base64-decodes blob arguments unless told otherwise; v1 sends them raw and does
# not know the option.
_VERSION = subprocess.run([AWS, "--version"], capture_output=True, text=True, check=True)
RAW_PAYLOAD = (
    ["--cli-binary-format", "raw-in-base64-out"]
    if (_VERSION.stdout + _VERSION.stderr).startswith("aws-cli/2")
    else []
)


@dataclass
class Cli:
    """Runs `aws lambda ...` against one server, the way a user's shell would."""

    server: Server
    cwd: Path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = self.server.cli_env()
        # Hermetic: no profile, config or credentials file of the machine is read.
        env.update(AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
        env.pop("AWS_PROFILE", None)
        result = subprocess.run(
            [AWS, "--endpoint-url", self.server.endpoint, "--output", "json", "lambda", *args],
            env=env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args).stdout)


@pytest.fixture
def cli(server: Server, tmp_path: Path) -> Cli:
    return Cli(server, tmp_path)


@pytest.fixture
def function(cli: Cli, tmp_path: Path) -> Iterator[str]:
    """An Active function created with `aws lambda create-function`, deleted afterwards."""
    name = unique_name("cli")
    (tmp_path / "function.zip").write_bytes(make_zip(ECHO))
    cli.run(
        "create-function",
        "--function-name",
        name,
        "--runtime",
        "python3.11",
        "--role",
        ROLE,
        "--handler",
        "app.handler",
        "--zip-file",
        "fileb://function.zip",
    )
    cli.run("wait", "function-active-v2", "--function-name", name)
    yield name
    cli.run("delete-function", "--function-name", name, check=False)


class TestFunctionLifecycle:
    def test_create_wait_get(self, cli: Cli, tmp_path: Path) -> None:
        name = unique_name("cli-create")
        zip_bytes = make_zip(ECHO)
        (tmp_path / "function.zip").write_bytes(zip_bytes)
        created = cli.json(
            "create-function",
            "--function-name",
            name,
            "--runtime",
            "python3.11",
            "--role",
            ROLE,
            "--handler",
            "app.handler",
            "--zip-file",
            "fileb://function.zip",
            "--timeout",
            "10",
            "--memory-size",
            "256",
            "--tags",
            "team=core",
        )
        assert created["FunctionName"] == name
        assert created["FunctionArn"] == ARN.format(name)
        assert (created["State"], created["StateReasonCode"]) == ("Pending", "Creating")
        assert (created["Timeout"], created["MemorySize"]) == (10, 256)
        assert created["CodeSize"] == len(zip_bytes)
        digest = base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode()
        assert created["CodeSha256"] == digest
        assert cli.run("wait", "function-active-v2", "--function-name", name).stdout == ""
        got = cli.json("get-function", "--function-name", name)
        assert got["Configuration"]["State"] == "Active"
        assert got["Configuration"]["LastUpdateStatus"] == "Successful"
        assert got["Tags"] == {"team": "core"}
        with urllib.request.urlopen(got["Code"]["Location"], timeout=30) as response:
            assert response.read() == zip_bytes
        # botocore's model surfaces the HTTP status of DeleteFunction (204), so the CLI prints it.
        assert cli.json("delete-function", "--function-name", name) == {"StatusCode": 204}

    def test_list_functions(self, cli: Cli, function: str) -> None:
        listed = cli.json("list-functions")
        item = next(f for f in listed["Functions"] if f["FunctionName"] == function)
        assert item["FunctionArn"] == ARN.format(function)
        assert "State" not in item
        names = [f["FunctionName"] for f in listed["Functions"]]
        assert names == sorted(names)
        assert len(names) == len(set(names))
        first = cli.json("list-functions", "--max-items", "1")
        assert len(first["Functions"]) == 1
        if len(names) > 1:
            rest = cli.json("list-functions", "--starting-token", first["NextToken"])
            assert [f["FunctionName"] for f in first["Functions"] + rest["Functions"]] == names

    def test_invoke_with_log_tail(self, cli: Cli, function: str, tmp_path: Path) -> None:
        result = cli.json(
            "invoke",
            "--function-name",
            function,
            *RAW_PAYLOAD,
            "--payload",
            '{"hello": "world"}',
            "--log-type",
            "Tail",
            "out.json",
        )
        assert result["StatusCode"] == 200
        assert result["ExecutedVersion"] == "$LATEST"
        assert "FunctionError" not in result
        assert json.loads((tmp_path / "out.json").read_text()) == {"hello": "world"}
        log = base64.b64decode(result["LogResult"]).decode()
        assert "START RequestId: " in log
        assert "handling {'hello': 'world'}" in log
        assert "REPORT RequestId: " in log

    def test_update_configuration_and_wait(self, cli: Cli, function: str) -> None:
        before = cli.json("get-function-configuration", "--function-name", function)
        updated = cli.json(
            "update-function-configuration",
            "--function-name",
            function,
            "--timeout",
            "20",
            "--description",
            "from the cli",
            "--environment",
            "Variables={GREETING=hello,TARGET=world}",
        )
        assert updated["LastUpdateStatus"] == "InProgress"
        assert updated["RevisionId"] != before["RevisionId"]
        cli.run("wait", "function-updated-v2", "--function-name", function)
        config = cli.json("get-function-configuration", "--function-name", function)
        assert config["LastUpdateStatus"] == "Successful"
        assert (config["Timeout"], config["Description"]) == (20, "from the cli")
        assert config["Environment"] == {"Variables": {"GREETING": "hello", "TARGET": "world"}}

    def test_update_code(self, cli: Cli, function: str, tmp_path: Path) -> None:
        new_zip = make_zip({"app.py": "def handler(event, context):\n    return 'v2'\n"})
        (tmp_path / "v2.zip").write_bytes(new_zip)
        updated = cli.json(
            "update-function-code", "--function-name", function, "--zip-file", "fileb://v2.zip"
        )
        assert updated["CodeSize"] == len(new_zip)
        cli.run("wait", "function-updated-v2", "--function-name", function)
        cli.run("invoke", "--function-name", function, "out.json")
        assert (tmp_path / "out.json").read_text() == '"v2"'

    def test_tags(self, cli: Cli, function: str) -> None:
        resource = ARN.format(function)
        tagged = cli.run("tag-resource", "--resource", resource, "--tags", "A=a,B=b")
        assert tagged.stdout == ""
        assert cli.json("list-tags", "--resource", resource) == {"Tags": {"A": "a", "B": "b"}}
        cli.run("untag-resource", "--resource", resource, "--tag-keys", "A")
        assert cli.json("list-tags", "--resource", resource) == {"Tags": {"B": "b"}}


class TestErrors:
    def test_deleted_function_is_not_found(self, cli: Cli, function: str) -> None:
        cli.run("delete-function", "--function-name", function)
        result = cli.run("get-function", "--function-name", function, check=False)
        assert result.returncode in (254, 255)
        assert result.stdout == ""
        assert (
            "An error occurred (ResourceNotFoundException) when calling the GetFunction operation: "
            f"Function not found: {ARN.format(function)}"
        ) in result.stderr
        waited = cli.run("wait", "function-exists", "--function-name", function, check=False)
        assert waited.returncode == 255 and "Waiter FunctionExists failed" in waited.stderr

    def test_invalid_zip(self, cli: Cli, tmp_path: Path) -> None:
        # The CLI itself refuses files that are not ZIPs; this one only the server can refuse.
        (tmp_path / "bad.zip").write_bytes(make_zip({**ECHO, "../evil.py": "x"}))
        name = unique_name("cli-bad")
        result = cli.run(
            "create-function",
            "--function-name",
            name,
            "--runtime",
            "python3.11",
            "--role",
            ROLE,
            "--handler",
            "app.handler",
            "--zip-file",
            "fileb://bad.zip",
            check=False,
        )
        assert result.returncode in (254, 255)
        assert (
            "An error occurred (InvalidParameterValueException) when calling the CreateFunction "
            "operation: Could not unzip uploaded file. Please check your file, then try to upload "
            "again."
        ) in result.stderr
        assert cli.run("get-function", "--function-name", name, check=False).returncode != 0

    def test_duplicate_create(self, cli: Cli, function: str, tmp_path: Path) -> None:
        (tmp_path / "function.zip").write_bytes(make_zip(ECHO))
        result = cli.run(
            "create-function",
            "--function-name",
            function,
            "--runtime",
            "python3.11",
            "--role",
            ROLE,
            "--handler",
            "app.handler",
            "--zip-file",
            "fileb://function.zip",
            check=False,
        )
        assert result.returncode in (254, 255)
        assert (
            "(ResourceConflictException) when calling the CreateFunction operation: "
            f"Function already exist: {function}"
        ) in result.stderr

    def test_client_side_validation(self, cli: Cli) -> None:
        result = cli.run("get-function", check=False)
        assert result.returncode in (2, 252, 255)  # argparse's usage error (v1), 252 (v2)
        assert "--function-name" in result.stderr
