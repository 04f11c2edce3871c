"""ARN parsing, credentials, presigned code URLs, the log store, runtime discovery, launch env."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import stat
import threading
from pathlib import Path

import pytest

from lambdad.api.code_urls import CodeUrlSigner
from lambdad.control.arns import check_reachable, parse_function_ref
from lambdad.control.model import FunctionConfig, runtime_version_family
from lambdad.credentials import load_root_credentials, read_stored_root_credentials
from lambdad.errors import InvalidParameterValueException, ResourceNotFoundException
from lambdad.observability import logs
from lambdad.observability.logs import LogStore, new_stream_name
from lambdad.runtime.launch import EnvironmentPlan, SessionCredentials, environment_variables
from lambdad.runtime.runtimes import Family, RuntimeCatalog, RuntimeSpec
from lambdad.sandbox.base import ExitStatus


@pytest.mark.parametrize(
    ("value", "name", "qualifier", "account", "region"),
    [
        ("fn", "fn", None, None, None),
        ("fn:$LATEST", "fn", "$LATEST", None, None),
        ("123456789012:function:fn", "fn", None, "123456789012", None),
        (
            "arn:aws:lambda:eu-west-1:123456789012:function:fn:7",
            "fn",
            "7",
            "123456789012",
            "eu-west-1",
        ),
    ],
)
def test_function_refs(
    value: str, name: str, qualifier: str | None, account: str | None, region: str | None
) -> None:
    ref = parse_function_ref(value)
    assert (ref.name, ref.qualifier, ref.account_id, ref.region) == (
        name,
        qualifier,
        account,
        region,
    )


def test_qualifier_mismatch_and_region() -> None:
    with pytest.raises(InvalidParameterValueException, match="derived qualifier"):
        parse_function_ref("fn:1", "2")
    assert parse_function_ref("fn:1", "1").qualifier == "1"
    with pytest.raises(ResourceNotFoundException, match="not reachable in this region"):
        check_reachable(
            parse_function_ref("arn:aws:lambda:eu-west-1:123456789012:function:f"), "us-east-1"
        )


def test_root_credentials_generated_once_and_private(tmp_path: Path) -> None:
    first = load_root_credentials(tmp_path, {})
    assert first.generated and first.access_key_id.startswith("AKIA")
    assert len(first.access_key_id) == 20 and len(first.secret_access_key) == 40
    assert stat.S_IMODE(os.stat(tmp_path / "root-credentials.json").st_mode) == 0o600
    again = load_root_credentials(tmp_path, {})
    assert (again.access_key_id, again.generated) == (first.access_key_id, False)
    assert read_stored_root_credentials(tmp_path) == again
    env = {"LAMBDAD_ROOT_ACCESS_KEY_ID": "AKIA1", "LAMBDAD_ROOT_SECRET_ACCESS_KEY": "s"}
    assert load_root_credentials(tmp_path, env).access_key_id == "AKIA1"


def test_code_urls_expire_and_resist_tampering() -> None:
    signer = CodeUrlSigner(b"k" * 32)
    url = signer.url("http://h", "ab" * 32, now=1000)
    query = dict(part.split("=") for part in url.split("?")[1].split("&"))
    assert signer.verify("ab" * 32, query["Expires"], query["Signature"], now=1000)
    assert not signer.verify("ab" * 32, query["Expires"], query["Signature"], now=10**9)
    assert not signer.verify("cd" * 32, query["Expires"], query["Signature"], now=1000)
    assert not signer.verify("ab" * 32, "9999999999", query["Signature"], now=1000)


def test_log_store_streams_and_events(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    name = new_stream_name("$LATEST", now=0)
    assert re.fullmatch(r"1970/01/01/\[\$LATEST\][0-9a-f]{32}", name)
    assert new_stream_name("7", now=86400 * 365).startswith("1971/01/01/[7]")
    assert new_stream_name("$LATEST") != new_stream_name("$LATEST")
    stream = store.open_stream("000000000000", "/aws/lambda/f", name)
    stream.write("one\n", 5)
    stream.write("two\n", 6)
    stream.close()
    assert store.groups("000000000000") == ["/aws/lambda/f"]
    (info,) = store.streams("000000000000", "/aws/lambda/f")
    assert (info.name, info.first_event, info.last_event) == (name, 5, 6)
    messages = [e.message for e in store.events("000000000000", "/aws/lambda/f", name)]
    assert messages == ["one\n", "two\n"]


def test_log_files_are_created_off_the_loop_and_read_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creators: list[str] = []
    create = logs._create_file

    def spy(path: Path, head: bytes) -> object:
        creators.append(threading.current_thread().name)
        return create(path, head)

    monkeypatch.setattr(logs, "_create_file", spy)
    store = LogStore(tmp_path)
    name = new_stream_name("$LATEST")
    stream = store.open_stream("000000000000", "/aws/lambda/f", name)

    async def write_and_read() -> list[str]:
        stream.write("one\n", 5)
        stream.flush_soon()  # the timer's flush starts the file's creation, in the thread
        await asyncio.sleep(logs.FLUSH_DELAY * 2)
        stream.write("two\n", 6)  # buffered, or written if the file is there already
        return [e.message for e in store.events("000000000000", "/aws/lambda/f", name)]

    assert asyncio.run(write_and_read()) == ["one\n", "two\n"]
    assert creators == ["lambdad-logs_0"]
    stream.close()


def test_the_log_file_thread_yields_and_a_reader_never_waits_behind_it(tmp_path: Path) -> None:
    """The file thread runs at nice 19 (cold starts come first); a reader whose stream's file
    is still queued behind it makes the file itself."""
    ours = os.getpriority(os.PRIO_PROCESS, 0)  # (0, unless the tests run niced)
    store = LogStore(tmp_path)
    assert store._files.submit(os.getpriority, os.PRIO_PROCESS, 0).result() == 19
    assert os.getpriority(os.PRIO_PROCESS, 0) == ours  # only that thread
    held = threading.Event()
    store._files.submit(held.wait, 30)  # the thread is busy (a backlog, in a burst)
    name = new_stream_name("$LATEST")
    stream = store.open_stream("000000000000", "/aws/lambda/f", name)

    async def write_then_read() -> list[str]:
        stream.write("one\n", 5)
        stream.flush_soon()  # queues the file's creation behind the held thread
        await asyncio.sleep(logs.FLUSH_DELAY * 2)
        stream.write("two\n", 6)
        return [e.message for e in store.events("000000000000", "/aws/lambda/f", name)]

    try:
        assert asyncio.run(write_then_read()) == ["one\n", "two\n"]
    finally:
        held.set()
    stream.write("three\n", 7)
    stream.close()
    store.close()
    (path,) = tmp_path.glob("000000000000/*/*.jsonl")
    assert path.read_bytes().count(b"\n") == 3  # one file, made once


def test_closing_the_log_store_writes_what_open_streams_buffered(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    name = new_stream_name("$LATEST")
    stream = store.open_stream("000000000000", "/aws/lambda/f", name)
    stream.write("left in the buffer\n", 5)  # no flush: the server stops now
    store.close()
    (path,) = tmp_path.glob("000000000000/*/*.jsonl")
    assert path.read_bytes() == b'[5,"left in the buffer\\n"]\n'
    late = store.open_stream("000000000000", "/aws/lambda/f", new_stream_name("$LATEST"))
    late.write("after\n", 6)
    with pytest.raises(RuntimeError, match="shutdown"):  # its file thread has ended
        late.flush()


def test_session_credentials_have_aws_shapes_and_differ() -> None:
    made = [SessionCredentials.generate() for _ in range(200)]
    for creds in made:
        assert re.fullmatch(r"ASIA[A-Z2-7]{16}", creds.access_key_id)
        assert re.fullmatch(r"[A-Za-z0-9_-]{40}", creds.secret_access_key)
        assert re.fullmatch(r"[A-Za-z0-9_-]{128}", creds.session_token)
    assert len({c.access_key_id for c in made}) == len({c.secret_access_key for c in made}) == 200
    # every character of the alphabet turns up: the key is not a biased or truncated encoding
    seen = set("".join(c.access_key_id[4:] for c in made))
    assert seen == set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


def test_exit_status_wording() -> None:
    assert ExitStatus(code=1).describe() == "exit status 1"
    assert ExitStatus(signal=9).describe() == "signal: killed"
    assert ExitStatus(signal=11).describe() == "signal: segmentation fault"


def test_catalog_refusals() -> None:
    catalog = RuntimeCatalog({"python3.11": RuntimeSpec("python3.11", Family.PYTHON, "/x")})
    assert catalog.require("python3.11").execution_env == "AWS_Lambda_python3.11"
    with pytest.raises(InvalidParameterValueException, match="no longer supported"):
        catalog.require("python3.7")
    with pytest.raises(InvalidParameterValueException, match="java21 is not supported"):
        catalog.require("java21")


def test_environment_variables_follow_aws(tmp_path: Path) -> None:
    config = FunctionConfig(
        account_id="000000000000",
        region="eu-west-1",
        name="f",
        runtime="nodejs20.x",
        handler="index.handler",
        role="r",
        code_key="a" * 64,
        code_sha256="",
        code_size=0,
        memory_size=256,
        environment={"MINE": "1"},
    )
    spec = RuntimeSpec("nodejs20.x", Family.NODEJS, "/usr/bin/node", "20")
    plan = EnvironmentPlan(config, spec, tmp_path, "127.0.0.1:1234", "2024/01/01/[$LATEST]ab")
    env = environment_variables(plan, SessionCredentials.generate())
    assert env["MINE"] == "1"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/f"
    assert env["AWS_LAMBDA_RUNTIME_API"] == "127.0.0.1:1234"
    assert env["AWS_EXECUTION_ENV"] == "AWS_Lambda_nodejs20.x"
    assert env["AWS_ACCESS_KEY_ID"].startswith("ASIA")
    assert env["NODE_PATH"].startswith("/opt/nodejs/node20/node_modules:/opt/nodejs/node_modules")
    assert env["PATH"].endswith(":/opt/bin") and env["TZ"] == ":UTC"
    assert "AWS_LAMBDA_LOG_FORMAT" not in env and "AWS_LAMBDA_LOG_LEVEL" not in env  # Text

    json_config = config.evolve(
        log_format="JSON", application_log_level="ERROR", custom_log_group="g"
    )
    env = environment_variables(
        dataclasses.replace(plan, config=json_config), SessionCredentials.generate()
    )
    assert env["AWS_LAMBDA_LOG_FORMAT"] == "JSON"
    assert env["AWS_LAMBDA_LOG_LEVEL"] == "ERROR"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == "g"


@pytest.mark.parametrize(
    ("runtime", "family"),
    [
        ("python3.12", "python:3.12"),
        ("nodejs20.x", "nodejs:20"),
        ("ruby3.3", "ruby:3.3"),
        ("java21", "java:21"),
        ("dotnet8", "dotnet:8"),
        ("provided.al2023", "provided:al2023"),
        ("go1.x", "go:1"),
    ],
)
def test_runtime_versions_are_named_as_aws_names_them(runtime: str, family: str) -> None:
    """INIT_START's "Runtime Version: python:3.12.v36" (AWS) — the family part, then ours."""
    assert runtime_version_family(runtime) == family
