"""The `lambdad` client subcommands, run as subprocesses against a real `lambdad serve`."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import queue
import subprocess
import sys
import threading
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import pytest

from lambdad.cli.client import Credentials, Target, fetch_status
from lambdad.cli.packaging import build_zip, collect
from tests.conftest import ROOT, Server, make_zip, module_server, unique_name

HANDLER_V1 = (
    "import os\n\n"
    "def handler(event, context):\n"
    "    print('marker', event.get('marker'))\n"
    "    return {'version': 1, 'event': event, 'greeting': os.environ.get('GREETING')}\n"
)
HANDLER_V2 = HANDLER_V1.replace("'version': 1", "'version': 2")
FAILING = "def handler(event, context):\n    raise ValueError('boom')\n"
WAIT_SECONDS = 60  # upper bound for a line to show up, so a broken run fails instead of hanging


def run_cli(
    env: Mapping[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lambdad.cli.main", *args],
        env=dict(env),
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
    )


def cli(server: Server, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(server.cli_env(), *args, stdin=stdin)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def write_function(directory: Path, source: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "app.py").write_text(source)
    return directory


@pytest.fixture(scope="module")
def deployed(server: Server, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A python3.11 function created by `lambdad deploy` from a directory."""
    name = unique_name("cli")
    source = write_function(tmp_path_factory.mktemp("cli") / "fn", HANDLER_V1)
    result = ok(cli(server, "deploy", str(source), "--name", name, "--runtime", "python3.11"))
    assert "created" in result.stdout
    assert f"function:{name}" in result.stdout
    assert "CodeSha256" in result.stdout
    return name


def invoke_json(server: Server, *args: str, stdin: str | None = None) -> Any:
    return json.loads(ok(cli(server, "invoke", *args, stdin=stdin)).stdout)


def test_deploy_creates_a_function_that_invokes(server: Server, deployed: str) -> None:
    response = invoke_json(server, deployed, "--payload", '{"marker": "create"}')
    assert response == {"version": 1, "event": {"marker": "create"}, "greeting": None}
    configuration = server.client().get_function_configuration(FunctionName=deployed)
    assert configuration["Runtime"] == "python3.11"
    assert configuration["Handler"] == "app.handler"
    assert configuration["Role"] == "arn:aws:iam::000000000000:role/lambdad-default"


def test_invoke_reads_the_payload_from_a_file(
    server: Server, deployed: str, tmp_path: Path
) -> None:
    payload = tmp_path / "event.json"
    payload.write_text('{"marker": "from-file"}')
    assert invoke_json(server, deployed, "--payload", f"@{payload}")["event"] == {
        "marker": "from-file"
    }
    from_stdin = invoke_json(server, deployed, "--payload", "@-", stdin='{"marker": "stdin"}')
    assert from_stdin["event"] == {"marker": "stdin"}


def test_deploy_again_updates_code_and_only_the_given_configuration(
    server: Server, tmp_path: Path
) -> None:
    name = unique_name("cli-update")
    ok(
        cli(
            server,
            "deploy",
            str(write_function(tmp_path / "v1", HANDLER_V1)),
            "--name",
            name,
            "--runtime",
            "python3.11",
            "--memory",
            "256",
        )
    )
    source = write_function(tmp_path / "v2", HANDLER_V2)
    result = ok(cli(server, "deploy", str(source), "--name", name, "--env", "GREETING=hi"))
    assert "updated" in result.stdout
    response = invoke_json(server, name, "--payload", "{}")
    assert response == {"version": 2, "event": {}, "greeting": "hi"}
    configuration = server.client().get_function_configuration(FunctionName=name)
    assert configuration["MemorySize"] == 256  # not given again: unchanged
    assert configuration["Runtime"] == "python3.11"
    assert configuration["LastUpdateStatus"] == "Successful"


def test_deploy_takes_a_zip_as_it_is(server: Server, tmp_path: Path) -> None:
    package = tmp_path / "fn.zip"
    package.write_bytes(make_zip({"app.py": HANDLER_V1}))
    name = unique_name("cli-zip")
    result = ok(cli(server, "deploy", str(package), "--name", name, "--runtime", "python3.11"))
    sha = base64.b64encode(hashlib.sha256(package.read_bytes()).digest()).decode()
    assert sha in result.stdout
    assert invoke_json(server, name)["version"] == 1


def test_invoke_log_prints_the_log_tail_to_stderr(server: Server, deployed: str) -> None:
    result = ok(cli(server, "invoke", deployed, "--payload", '{"marker": "tail"}', "--log"))
    assert json.loads(result.stdout)["event"] == {"marker": "tail"}
    for line in ("START RequestId:", "marker tail", "END RequestId:", "REPORT RequestId:"):
        assert line in result.stderr


def test_invoke_function_error_exits_1(server: Server, tmp_path: Path) -> None:
    name = unique_name("cli-fail")
    ok(
        cli(
            server,
            "deploy",
            str(write_function(tmp_path, FAILING)),
            "--name",
            name,
            "--runtime",
            "python3.11",
        )
    )
    result = cli(server, "invoke", name)
    assert result.returncode == 1
    assert json.loads(result.stdout)["errorType"] == "ValueError"
    assert "Unhandled" in result.stderr
    assert "ValueError: boom" in result.stderr


def test_invoke_unknown_function_fails_with_aws_error(server: Server) -> None:
    result = cli(server, "invoke", unique_name("missing"))
    assert result.returncode != 0
    assert "ResourceNotFoundException" in result.stderr
    assert "Function not found" in result.stderr


def test_invoke_event_and_dry_run(server: Server, deployed: str) -> None:
    event = ok(cli(server, "invoke", deployed, "--type", "Event", "--payload", "{}"))
    assert "202" in event.stderr
    dry_run = ok(cli(server, "invoke", deployed, "--type", "DryRun"))
    assert "204" in dry_run.stderr


def test_logs_prints_report_lines(server: Server, deployed: str) -> None:
    ok(cli(server, "invoke", deployed, "--payload", '{"marker": "for-logs"}'))
    output = ok(cli(server, "logs", deployed)).stdout
    assert "marker for-logs" in output
    assert "REPORT RequestId:" in output
    starts = [line for line in output.splitlines() if "START RequestId:" in line]
    assert starts == sorted(starts)  # oldest first


def test_logs_reads_the_configured_log_group(server: Server, deployed: str) -> None:
    lam = server.client()
    group = unique_name("cli_group")
    lam.update_function_configuration(FunctionName=deployed, LoggingConfig={"LogGroup": group})
    lam.get_waiter("function_updated_v2").wait(FunctionName=deployed)
    try:
        ok(cli(server, "invoke", deployed, "--payload", '{"marker": "in-its-group"}'))
        output = ok(cli(server, "logs", deployed)).stdout
        assert "marker in-its-group" in output
        assert "marker for-logs" not in output  # that one is in /aws/lambda/NAME
    finally:
        lam.update_function_configuration(
            FunctionName=deployed, LoggingConfig={"LogGroup": f"/aws/lambda/{deployed}"}
        )
        lam.get_waiter("function_updated_v2").wait(FunctionName=deployed)


def test_logs_follow_prints_new_invocations(server: Server, deployed: str) -> None:
    ok(cli(server, "invoke", deployed, "--payload", '{"marker": "before-follow"}'))
    command = [sys.executable, "-m", "lambdad.cli.main", "logs", deployed, "--follow"]
    with subprocess.Popen(
        command, env=server.cli_env(), cwd=ROOT, stdout=subprocess.PIPE, text=True
    ) as follower:
        assert follower.stdout is not None
        lines, pump = _lines(follower.stdout)
        try:
            _wait_for(lines, "marker before-follow")  # the backlog: it is polling now
            ok(cli(server, "invoke", deployed, "--payload", '{"marker": "while-following"}'))
            _wait_for(lines, "marker while-following")
        finally:
            # The reader ends at the pipe's end of file, before Popen closes the pipe under it.
            follower.terminate()
            follower.wait(timeout=WAIT_SECONDS)
            pump.join(timeout=WAIT_SECONDS)


def _lines(stream: IO[str]) -> tuple[queue.Queue[str], threading.Thread]:
    """A queue of `stream`'s lines, filled by the thread returned with it (it ends at EOF)."""
    received: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            received.put(line)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return received, thread


def _wait_for(lines: queue.Queue[str], text: str) -> None:
    while True:
        try:
            line = lines.get(timeout=WAIT_SECONDS)
        except queue.Empty:
            pytest.fail(f"`lambdad logs --follow` did not print {text!r}")
        if text in line:
            return


def test_ls_lists_functions(server: Server, deployed: str) -> None:
    output = ok(cli(server, "ls")).stdout
    line = next(line for line in output.splitlines() if deployed in line)
    assert "python3.11" in line
    assert "128 MB" in line
    assert "3 s" in line


def status_document(server: Server) -> dict[str, Any]:
    credentials = Credentials(
        server.env["LAMBDAD_ROOT_ACCESS_KEY_ID"],
        server.env["LAMBDAD_ROOT_SECRET_ACCESS_KEY"],
        None,
        "test",
    )
    return fetch_status(Target(server.endpoint, "us-east-1", server.data_dir, credentials))


def test_doctor_reports_isolation_and_runtimes(server: Server) -> None:
    status = status_document(server)
    output = ok(cli(server, "doctor")).stdout
    assert "server reachable" in output
    assert f"accepted, account {status['accountId']}" in output
    assert f"isolation: {status['isolation']['backend']}" in output
    for runtime in status["runtimes"]:
        assert runtime["runtime"] in output
        if runtime["executable"]:
            assert runtime["executable"] in output
    for feature in status["isolation"]["features"]:
        assert feature.replace("_", " ") in output


def test_doctor_reports_refused_credentials(server: Server) -> None:
    env = {**server.cli_env(), "AWS_SECRET_ACCESS_KEY": "not-the-secret" * 3}
    result = run_cli(env, "doctor")
    assert result.returncode == 1
    assert "server reachable" in result.stdout
    assert "InvalidSignatureException" in result.stdout


def test_doctor_says_when_the_server_is_unreachable(server: Server) -> None:
    result = cli(server, "doctor", "--endpoint-url", "http://127.0.0.1:1")
    assert result.returncode == 1
    assert "not reachable" in result.stderr


# A server that generated its root credentials and stored them in its data dir.
self_keyed_server = module_server(
    "cli-keys", env={"LAMBDAD_ROOT_ACCESS_KEY_ID": "", "LAMBDAD_ROOT_SECRET_ACCESS_KEY": ""}
)


def env_without_credentials() -> dict[str, str]:
    names = (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "LAMBDAD_ROOT_ACCESS_KEY_ID",
        "LAMBDAD_ROOT_SECRET_ACCESS_KEY",
        "LAMBDAD_DATA_DIR",
        "LAMBDAD_ENDPOINT_URL",
    )
    return {k: v for k, v in os.environ.items() if k not in names}


def test_credentials_come_from_the_data_dir(self_keyed_server: Server) -> None:
    stored = json.loads((self_keyed_server.data_dir / "root-credentials.json").read_text())
    target = [
        "--endpoint-url",
        self_keyed_server.endpoint,
        "--data-dir",
        str(self_keyed_server.data_dir),
    ]
    env = env_without_credentials()
    doctor = ok(run_cli(env, "doctor", *target)).stdout
    assert f"credentials {stored['AccessKeyId']} from data dir" in doctor
    ok(run_cli(env, "ls", *target))


def test_no_credentials_is_an_error(self_keyed_server: Server, tmp_path: Path) -> None:
    env = env_without_credentials()
    result = run_cli(
        env, "ls", "--endpoint-url", self_keyed_server.endpoint, "--data-dir", str(tmp_path)
    )
    assert result.returncode == 1
    assert "no credentials" in result.stderr


def test_directory_zip_is_deterministic_and_keeps_exec_bits(tmp_path: Path) -> None:
    write_function(tmp_path, HANDLER_V1)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tool").write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "bin" / "tool").chmod(0o750)
    for skipped in ("__pycache__/app.cpython-311.pyc", ".git/HEAD", "lib/__pycache__/x.pyc"):
        (tmp_path / skipped).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / skipped).write_text("skip me")
    first = build_zip(collect(tmp_path), lambda n: None)
    (tmp_path / "app.py").touch()  # a new mtime must not change the package
    assert build_zip(collect(tmp_path), lambda n: None) == first
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        modes = {info.filename: (info.external_attr >> 16) & 0o777 for info in archive.infolist()}
    assert modes == {"app.py": 0o644, "bin/tool": 0o755}
