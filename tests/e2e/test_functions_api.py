"""The Lambda control plane through boto3, against a real `lambdad serve`.

Codes, statuses, body casing and messages are AWS's own, as recorded from real AWS in
/work/shared/aws-recordings/lambda/test_lambda_api.snapshot.json.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import re
import struct
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ROLE, Server, create_function, make_zip, start_server, unique_name

ACCOUNT = "000000000000"
ECHO = {"app.py": "def handler(event, context):\n    return event\n"}
ENV_ECHO = {"app.py": "import os\n\ndef handler(event, context):\n    return dict(os.environ)\n"}
NOT_FOUND = "ResourceNotFoundException"
INVALID = "InvalidParameterValueException"
VALIDATION = "ValidationException"
TOO_LARGE = "RequestEntityTooLargeException"
UNZIP_FAILED = "Could not unzip uploaded file. Please check your file, then try to upload again."
UNZIPPED_TOO_LARGE = "Unzipped size must be smaller than 262144000 bytes"
LAST_MODIFIED = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+0000$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TAGS_UNSUPPORTED = (
    "Tags on function aliases and versions are not supported. Please specify a function ARN."
)
STALE_REVISION = (
    "The Revision Id provided does not match the latest Revision Id. Call the "
    "GetFunction/GetAlias API to retrieve the latest Revision Id"
)
ENV_TOO_LARGE = (
    "Lambda was unable to configure your environment variables because the environment "
    "variables you have provided exceeded the 4KB limit. String measured: "
)
# AWS's error bodies: {"Type": "User", "message": ...} for these, {"Type": "User", "Message": ...}
# for ResourceNotFoundException, and neither Type nor a message member for ValidationException
# and RequestEntityTooLargeException.
LOWERCASE_MESSAGE = {INVALID, "ResourceConflictException", "PreconditionFailedException"}


def arn(name: str, region: str = "us-east-1") -> str:
    return f"arn:aws:lambda:{region}:{ACCOUNT}:function:{name}"


def not_found(name: str) -> str:
    return f"Function not found: {arn(name)}"


def refusal(call: Callable[..., Any], **kwargs: Any) -> tuple[str, int, str]:
    """Call, which must fail: (code, HTTP status, message); the body's casing is AWS's."""
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    response: dict[str, Any] = info.value.response
    code, message = response["Error"]["Code"], response["Error"]["Message"]
    if code in LOWERCASE_MESSAGE:
        assert (response["Type"], response["message"]) == ("User", message)
    elif code == NOT_FOUND:
        assert (response["Type"], response["Message"]) == ("User", message)
    else:
        assert "Type" not in response
    return code, response["ResponseMetadata"]["HTTPStatusCode"], message


def assert_absent(lam: Any, name: str) -> None:
    """Nothing half-written: the function is neither readable nor listed."""
    assert refusal(lam.get_function, FunctionName=name) == (NOT_FOUND, 404, not_found(name))
    assert name not in listed_names(lam)


def listed_names(lam: Any, **pagination: Any) -> list[str]:
    pages = lam.get_paginator("list_functions").paginate(PaginationConfig=pagination)
    return [f["FunctionName"] for page in pages for f in page["Functions"]]


def create_kwargs(name: str, **overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "FunctionName": name,
        "Runtime": "python3.11",
        "Role": ROLE,
        "Handler": "app.handler",
        "Code": {"ZipFile": make_zip(ECHO)},
        **overrides,
    }
    return {k: v for k, v in kwargs.items() if v is not None}


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        data: bytes = response.read()
        return data


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return urlunsplit(parts._replace(query=urlencode(query)))


def b64sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.fixture
def fn(lam: Any) -> Iterator[str]:
    """An Active echo function, deleted afterwards."""
    name = create_function(lam, ECHO)
    yield name
    with contextlib.suppress(ClientError):
        lam.delete_function(FunctionName=name)


class TestCreateFunction:
    def test_create_response_is_awss(self, lam: Any) -> None:
        name = unique_name("create")
        zip_bytes = make_zip(ECHO)
        response = lam.create_function(**create_kwargs(name, Code={"ZipFile": zip_bytes}))
        assert response.pop("ResponseMetadata")["HTTPStatusCode"] == 201
        assert LAST_MODIFIED.match(response.pop("LastModified"))
        assert UUID.match(response.pop("RevisionId"))
        runtime_version = response.pop("RuntimeVersionConfig")["RuntimeVersionArn"]
        assert re.match(r"^arn:aws:lambda:us-east-1::runtime:[0-9a-f]{64}$", runtime_version)
        assert response == {
            "FunctionName": name,
            "FunctionArn": arn(name),
            "Runtime": "python3.11",
            "Role": ROLE,
            "Handler": "app.handler",
            "CodeSize": len(zip_bytes),
            "CodeSha256": b64sha256(zip_bytes),
            "Description": "",
            "Timeout": 3,
            "MemorySize": 128,
            "Version": "$LATEST",
            "TracingConfig": {"Mode": "PassThrough"},
            "State": "Pending",
            "StateReason": "The function is being created.",
            "StateReasonCode": "Creating",
            "PackageType": "Zip",
            "Architectures": ["x86_64"],
            "EphemeralStorage": {"Size": 512},
            "SnapStart": {"ApplyOn": "None", "OptimizationStatus": "Off"},
            "LoggingConfig": {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{name}"},
        }
        lam.delete_function(FunctionName=name)

    def test_becomes_active_and_waiters_succeed(self, lam: Any) -> None:
        name = unique_name("waiters")
        created = lam.create_function(
            **create_kwargs(name, Environment={"Variables": {"GREETING": "b"}})
        )
        assert created["Environment"] == {"Variables": {"GREETING": "b"}}
        for waiter in ("function_exists", "function_active_v2", "function_active"):
            lam.get_waiter(waiter).wait(FunctionName=name)
        config = lam.get_function(FunctionName=name)["Configuration"]
        assert (config["State"], config["LastUpdateStatus"]) == ("Active", "Successful")
        for absent in ("StateReason", "StateReasonCode", "LastUpdateStatusReason"):
            assert absent not in config
        assert config["RevisionId"] != created["RevisionId"]
        for same in ("LastModified", "RuntimeVersionConfig", "CodeSha256", "Environment"):
            assert config[same] == created[same]
        lam.update_function_configuration(FunctionName=name, Description="x")
        for waiter in ("function_updated_v2", "function_updated"):
            lam.get_waiter(waiter).wait(FunctionName=name)
        lam.delete_function(FunctionName=name)


class TestGetFunction:
    def test_code_location_serves_the_uploaded_zip(self, lam: Any) -> None:
        zip_bytes = make_zip({**ECHO, "data/readme.txt": os.urandom(1000)})
        name = unique_name("code")
        lam.create_function(**create_kwargs(name, Code={"ZipFile": zip_bytes}))
        response = lam.get_function(FunctionName=name)
        assert response["Code"]["RepositoryType"] == "S3"
        assert download(response["Code"]["Location"]) == zip_bytes
        assert "Tags" not in response
        lam.delete_function(FunctionName=name)

    @pytest.mark.parametrize(
        "tamper",
        [
            lambda url: with_query(url, Signature="0" * 64),
            lambda url: with_query(url, Expires="1"),
            lambda url: with_query(url, Expires=str(int(url.split("Expires=")[1][:10]) + 3600)),
            lambda url: url.split("?")[0],
            lambda url: url.replace("/_lambdad/code/", "/_lambdad/code/0"),
        ],
        ids=["signature", "expired", "extended", "unsigned", "other-key"],
    )
    def test_tampered_code_location_is_refused(
        self, lam: Any, fn: str, tamper: Callable[[str], str]
    ) -> None:
        location = lam.get_function(FunctionName=fn)["Code"]["Location"]
        with pytest.raises(urllib.error.HTTPError) as info:
            download(tamper(location))
        assert info.value.code == 403
        info.value.close()

    def test_tags_given_on_create_are_returned(self, lam: Any) -> None:
        name = unique_name("tagged")
        lam.create_function(**create_kwargs(name, Tags={"team": "core", "env": "test"}))
        assert lam.get_function(FunctionName=name)["Tags"] == {"team": "core", "env": "test"}
        assert lam.list_tags(Resource=arn(name))["Tags"] == {"team": "core", "env": "test"}
        lam.delete_function(FunctionName=name)

    def test_configuration_matches_get_function(self, lam: Any, fn: str) -> None:
        configuration = lam.get_function_configuration(FunctionName=fn)
        configuration.pop("ResponseMetadata")
        assert configuration == lam.get_function(FunctionName=fn)["Configuration"]


class TestListFunctions:
    @pytest.fixture(scope="class")
    def listed(self, lam: Any) -> Iterator[list[str]]:
        prefix = unique_name("list")
        names = [f"{prefix}-{i}" for i in (3, 0, 4, 1, 2, 5)]
        for name in names:
            lam.create_function(**create_kwargs(name))
        yield sorted(names)
        for name in names:
            lam.delete_function(FunctionName=name)

    def test_marker_pagination(self, lam: Any, listed: list[str]) -> None:
        seen: list[str] = []
        kwargs: dict[str, Any] = {"MaxItems": 2}
        while True:
            page = lam.list_functions(**kwargs)
            seen += [f["FunctionName"] for f in page["Functions"]]
            if "NextMarker" not in page:
                assert len(page["Functions"]) <= 2
                break
            assert len(page["Functions"]) == 2
            kwargs["Marker"] = page["NextMarker"]
        assert seen == sorted(set(seen))
        assert [n for n in seen if n in listed] == listed

    def test_paginator(self, lam: Any, listed: list[str]) -> None:
        seen = listed_names(lam, PageSize=2)
        assert seen == sorted(set(seen))
        assert [n for n in seen if n in listed] == listed
        assert listed_names(lam, MaxItems=3) == seen[:3]

    def test_items_omit_state(self, lam: Any, listed: list[str]) -> None:
        pages = lam.get_paginator("list_functions").paginate()
        items = {f["FunctionName"]: f for page in pages for f in page["Functions"]}
        for item in items.values():
            for absent in ("State", "StateReason", "LastUpdateStatus", "RuntimeVersionConfig"):
                assert absent not in item
        item = items[listed[0]]
        assert (item["FunctionArn"], item["Version"]) == (arn(listed[0]), "$LATEST")
        assert item["LoggingConfig"] == {
            "LogFormat": "Text",
            "LogGroup": f"/aws/lambda/{listed[0]}",
        }


class TestUpdateFunction:
    def test_update_code(self, lam: Any, fn: str) -> None:
        before = lam.get_function_configuration(FunctionName=fn)
        new_zip = make_zip({"app.py": "def handler(event, context):\n    return {'v': 2}\n"})
        response = lam.update_function_code(FunctionName=fn, ZipFile=new_zip)
        assert response["CodeSha256"] == b64sha256(new_zip) != before["CodeSha256"]
        assert response["CodeSize"] == len(new_zip)
        assert response["LastUpdateStatus"] == "InProgress"
        assert response["LastUpdateStatusReason"] == "The function is being created."
        assert response["LastUpdateStatusReasonCode"] == "Creating"
        assert response["State"] == "Active"
        assert response["RevisionId"] != before["RevisionId"]
        assert LAST_MODIFIED.match(response["LastModified"])
        lam.get_waiter("function_updated_v2").wait(FunctionName=fn)
        after = lam.get_function(FunctionName=fn)
        config = after["Configuration"]
        assert config["LastUpdateStatus"] == "Successful"
        assert "LastUpdateStatusReason" not in config
        assert config["CodeSha256"] == response["CodeSha256"]
        assert config["RevisionId"] not in (response["RevisionId"], before["RevisionId"])
        assert download(after["Code"]["Location"]) == new_zip
        assert lam.invoke(FunctionName=fn, Payload=b"{}")["Payload"].read() == b'{"v": 2}'

    def test_update_configuration(self, lam: Any) -> None:
        name = create_function(lam, ENV_ECHO)
        before = lam.get_function_configuration(FunctionName=name)
        response = lam.update_function_configuration(
            FunctionName=name,
            Runtime="python3.12",
            MemorySize=512,
            Timeout=10,
            Description="changed",
            EphemeralStorage={"Size": 2048},
            Environment={"Variables": {"GREETING": "hello"}},
        )
        assert response["LastUpdateStatus"] == "InProgress"
        assert response["RevisionId"] != before["RevisionId"]
        lam.get_waiter("function_updated_v2").wait(FunctionName=name)
        config = lam.get_function_configuration(FunctionName=name)
        assert (config["LastUpdateStatus"], config["Runtime"]) == ("Successful", "python3.12")
        assert (config["MemorySize"], config["Timeout"]) == (512, 10)
        assert (config["Description"], config["EphemeralStorage"]) == ("changed", {"Size": 2048})
        assert config["Environment"] == {"Variables": {"GREETING": "hello"}}
        assert config["CodeSha256"] == before["CodeSha256"]
        assert config["RuntimeVersionConfig"] != before["RuntimeVersionConfig"]
        env = lam.invoke(FunctionName=name, Payload=b"{}")["Payload"].read().decode()
        assert '"GREETING": "hello"' in env
        assert '"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512"' in env
        assert '"AWS_EXECUTION_ENV": "AWS_Lambda_python3.12"' in env
        lam.update_function_configuration(FunctionName=name, Handler="app.other")
        lam.get_waiter("function_updated_v2").wait(FunctionName=name)
        config = lam.get_function_configuration(FunctionName=name)
        assert config["Handler"] == "app.other"
        assert config["Environment"] == {"Variables": {"GREETING": "hello"}}  # untouched
        lam.delete_function(FunctionName=name)

    def test_revision_id_precondition(self, lam: Any, fn: str) -> None:
        stale = lam.get_function(FunctionName=fn)["Configuration"]["RevisionId"]
        lam.update_function_configuration(FunctionName=fn, Description="first")
        lam.get_waiter("function_updated_v2").wait(FunctionName=fn)
        precondition_failed = ("PreconditionFailedException", 412, STALE_REVISION)
        assert precondition_failed == refusal(
            lam.update_function_configuration, FunctionName=fn, Description="2", RevisionId=stale
        )
        assert precondition_failed == refusal(
            lam.update_function_code, FunctionName=fn, ZipFile=make_zip(ENV_ECHO), RevisionId=stale
        )
        config = lam.get_function_configuration(FunctionName=fn)
        assert (config["Description"], config["CodeSha256"]) == ("first", b64sha256(make_zip(ECHO)))
        revision = config["RevisionId"]
        updated = lam.update_function_configuration(
            FunctionName=fn, Description="second", RevisionId=revision
        )
        assert updated["Description"] == "second"
        lam.get_waiter("function_updated_v2").wait(FunctionName=fn)
        revision = lam.get_function_configuration(FunctionName=fn)["RevisionId"]
        lam.update_function_code(FunctionName=fn, ZipFile=make_zip(ENV_ECHO), RevisionId=revision)


class TestDeleteFunction:
    def test_delete_lifecycle(self, lam: Any) -> None:
        name = create_function(lam, ECHO)
        response = lam.delete_function(FunctionName=name)
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 204
        assert_absent(lam, name)
        gone = (NOT_FOUND, 404, not_found(name))
        assert refusal(lam.delete_function, FunctionName=name) == gone
        # Invoke names the version it resolved (AWS, 2025): "...:function:NAME:$LATEST".
        invoked = refusal(lam.invoke, FunctionName=name)
        assert invoked == (NOT_FOUND, 404, f"{not_found(name)}:$LATEST")

    def test_delete_unknown_version(self, lam: Any, fn: str) -> None:
        # AWS: deleting a version that does not exist succeeds, twice; once the function is
        # gone, the refusal names the bare function (recorded).
        for _ in range(2):
            response = lam.delete_function(FunctionName=fn, Qualifier="1221")
            assert response["ResponseMetadata"]["HTTPStatusCode"] == 204
        lam.get_function(FunctionName=fn)
        lam.delete_function(FunctionName=fn)
        deleted = refusal(lam.delete_function, FunctionName=fn, Qualifier="1221")
        assert deleted == (NOT_FOUND, 404, not_found(fn))


class TestFunctionNames:
    @pytest.mark.parametrize(
        "ref",
        [
            arn,
            f"{ACCOUNT}:function:{{}}".format,
            "{}:$LATEST".format,
            lambda n: f"{arn(n)}:$LATEST",
        ],
        ids=["arn", "partial-arn", "name-latest", "arn-latest"],
    )
    def test_reference_forms(self, lam: Any, fn: str, ref: Callable[[str], str]) -> None:
        config = lam.get_function(FunctionName=ref(fn))["Configuration"]
        assert (config["FunctionName"], config["Version"]) == (fn, "$LATEST")
        assert lam.get_function_configuration(FunctionName=ref(fn))["FunctionName"] == fn
        assert lam.invoke(FunctionName=ref(fn), Payload=b'"x"')["Payload"].read() == b'"x"'

    def test_create_with_arns(self, lam: Any) -> None:
        for make_ref in (arn, f"{ACCOUNT}:function:{{}}".format):
            name = unique_name("arn")
            response = lam.create_function(**create_kwargs(make_ref(name)))
            assert (response["FunctionName"], response["FunctionArn"]) == (name, arn(name))
            lam.delete_function(FunctionName=make_ref(name))
            assert_absent(lam, name)

    def test_name_length(self, lam: Any) -> None:
        name = unique_name("long").ljust(65, "x")
        message = (
            f"1 validation error detected: Value '{name}' at 'functionName' failed to satisfy "
            "constraint: Member must have length less than or equal to 64"
        )
        assert create_refused(lam, FunctionName=name) == (INVALID, 400, message)
        lam.create_function(**create_kwargs(name[:64]))
        lam.delete_function(FunctionName=name[:64])

    @pytest.mark.parametrize(
        "operation", ["get_function", "get_function_configuration", "delete_function", "invoke"]
    )
    def test_other_region(self, lam: Any, fn: str, operation: str) -> None:
        message = "Functions from 'eu-west-1' are not reachable in this region ('us-east-1')"
        refused = refusal(getattr(lam, operation), FunctionName=arn(fn, "eu-west-1"))
        assert refused == (NOT_FOUND, 404, message)
        lam.get_function(FunctionName=fn)

    def test_qualifiers(self, lam: Any, fn: str) -> None:
        mismatch = (
            "The derived qualifier from the function name does not match the specified qualifier."
        )
        refused = refusal(lam.get_function, FunctionName=f"{arn(fn)}:$LATEST", Qualifier="prod")
        assert refused == (INVALID, 400, mismatch)
        refused = refusal(lam.get_function, FunctionName=fn, Qualifier="1221")
        assert refused == (NOT_FOUND, 404, f"{not_found(fn)}:1221")
        refused = refusal(lam.get_function, FunctionName="nope-x:$LATEST")
        assert refused == (NOT_FOUND, 404, f"{not_found('nope-x')}:$LATEST")


class TestTags:
    def test_tag_lifecycle(self, lam: Any, fn: str) -> None:
        resource = arn(fn)

        def step(call: Callable[..., Any], expected: dict[str, str], **kwargs: Any) -> None:
            assert call(Resource=resource, **kwargs)["ResponseMetadata"]["HTTPStatusCode"] == 204
            assert lam.list_tags(Resource=resource)["Tags"] == expected

        assert lam.list_tags(Resource=resource)["Tags"] == {}
        step(lam.tag_resource, {"A": "a"}, Tags={"A": "a"})
        step(lam.tag_resource, {"A": "a", "B": "b", "C": "c"}, Tags={"B": "b", "C": "c"})
        step(
            lam.tag_resource, {"A": "a", "B": "b", "C": "c2", "D": "d"}, Tags={"C": "c2", "D": "d"}
        )
        step(lam.untag_resource, {"B": "b", "C": "c2", "D": "d"}, TagKeys=["A"])
        step(lam.untag_resource, {"D": "d"}, TagKeys=["B", "C"])
        step(lam.untag_resource, {"D": "d"}, TagKeys=["nope"])
        step(lam.untag_resource, {}, TagKeys=["D", "nope"])
        lam.tag_resource(Resource=resource, Tags={"kept": "yes"})
        assert lam.get_function(FunctionName=fn)["Tags"] == {"kept": "yes"}

    def test_tag_limits(self, server: Server, fn: str) -> None:
        raw, resource = server.client(parameter_validation=False), arn(fn)
        too_many = refusal(
            raw.tag_resource, Resource=resource, Tags={f"k{i}": "v" for i in range(51)}
        )
        assert too_many == (INVALID, 400, "Number of tags exceeds resource tag limit.")
        empty = refusal(raw.tag_resource, Resource=resource, Tags={})
        assert empty == (INVALID, 400, "An error occurred and the request cannot be processed.")
        no_keys = refusal(raw.untag_resource, Resource=resource, TagKeys=[])
        assert no_keys == invalid_value(None, "tagKeys", "Member must not be null")
        raw.tag_resource(Resource=resource, Tags={f"k{i}": "v" for i in range(50)})
        assert len(raw.list_tags(Resource=resource)["Tags"]) == 50

    @pytest.mark.parametrize("qualifier", ["$LATEST", "1", "alias"])
    def test_qualified_arn_refused(self, lam: Any, fn: str, qualifier: str) -> None:
        resource = f"{arn(fn)}:{qualifier}"
        refused = refusal(lam.tag_resource, Resource=resource, Tags={"A": "a"})
        assert refused == (INVALID, 400, TAGS_UNSUPPORTED)
        assert lam.list_tags(Resource=arn(fn))["Tags"] == {}

    def test_unknown_function(self, lam: Any) -> None:
        resource = arn("doesnotexist")
        gone = (NOT_FOUND, 404, not_found("doesnotexist"))
        assert refusal(lam.tag_resource, Resource=resource, Tags={"A": "a"}) == gone
        assert refusal(lam.untag_resource, Resource=resource, TagKeys=["A"]) == gone
        assert refusal(lam.list_tags, Resource=resource) == gone


class TestAccountSettings:
    def test_limits_and_usage(self, tmp_path: Path) -> None:
        server = start_server(tmp_path / "data")
        try:
            lam = server.client()
            empty = lam.get_account_settings()
            assert empty["AccountLimit"] == {
                "TotalCodeSize": 80_530_636_800,
                "CodeSizeUnzipped": 262_144_000,
                "CodeSizeZipped": 52_428_800,
                "ConcurrentExecutions": 1000,
                "UnreservedConcurrentExecutions": 1000,
            }
            assert empty["AccountUsage"] == {"TotalCodeSize": 0, "FunctionCount": 0}
            zips = [make_zip(ECHO), make_zip({**ECHO, "more.txt": os.urandom(2000)})]
            names = [create_function(lam, ECHO, name=f"acct-{i}") for i in range(2)]
            lam.update_function_code(FunctionName=names[1], ZipFile=zips[1])
            usage = lam.get_account_settings()["AccountUsage"]
            assert usage == {"FunctionCount": 2, "TotalCodeSize": len(zips[0]) + len(zips[1])}
            lam.delete_function(FunctionName=names[0])
            usage = lam.get_account_settings()["AccountUsage"]
            assert usage == {"FunctionCount": 1, "TotalCodeSize": len(zips[1])}
        finally:
            server.stop()


def bomb_zip(path: Path, unzipped: int, declared: int | None = None) -> bytes:
    """A deflated ZIP of one entry of `unzipped` zeros, built in 1 MiB writes.

    With `declared`, both headers lie and claim the entry unzips to that many bytes.
    """
    chunk = bytes(1 << 20)
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("app.py", "w") as entry,
    ):
        for _ in range(unzipped // len(chunk)):
            entry.write(chunk)
    data = bytearray(path.read_bytes())
    if declared is not None:
        central = struct.unpack_from("<I", data, data.rindex(b"PK\x05\x06") + 16)[0]
        struct.pack_into("<I", data, 22, declared)  # local header: uncompressed size
        struct.pack_into("<I", data, central + 24, declared)  # central directory entry
    return bytes(data)


def entry_zip(name: str, content: bytes, mode: int = 0o100644) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", ECHO["app.py"])
        info = zipfile.ZipInfo(name)
        info.external_attr = mode << 16
        archive.writestr(info, content)
    return buffer.getvalue()


def stored_random_zip(size: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("app.py", ECHO["app.py"])
        archive.writestr("blob.bin", os.urandom(size))
    return buffer.getvalue()


def create_refused(lam: Any, **overrides: Any) -> tuple[str, int, str]:
    """CreateFunction with these overrides fails, and leaves nothing behind."""
    name = overrides.pop("FunctionName", unique_name("refused"))
    refused = refusal(lam.create_function, **create_kwargs(name, **overrides))
    assert_absent(lam, name)
    return refused


class TestBadPackages:
    @pytest.mark.parametrize("zip_bytes", [b"not a zip", make_zip(ECHO)[:-30], b"PK\x03\x04xx"])
    def test_malformed_zip(self, lam: Any, fn: str, zip_bytes: bytes) -> None:
        refused = create_refused(lam, Code={"ZipFile": zip_bytes})
        assert refused == (INVALID, 400, UNZIP_FAILED)
        before = lam.get_function_configuration(FunctionName=fn)
        refused = refusal(lam.update_function_code, FunctionName=fn, ZipFile=zip_bytes)
        assert refused == (INVALID, 400, UNZIP_FAILED)
        after = lam.get_function_configuration(FunctionName=fn)
        assert (after["RevisionId"], after["CodeSha256"]) == (
            before["RevisionId"],
            before["CodeSha256"],
        )

    @pytest.mark.parametrize(
        "name, content, mode",
        [
            ("../evil", b"pwned", 0o100644),
            ("../../../evil", b"pwned", 0o100644),
            ("lib/../../evil", b"pwned", 0o100644),
            ("link", b"/etc/passwd", 0o120777),
            ("link", b"../../../../../../etc/passwd", 0o120777),
        ],
        ids=["dotdot", "deep-dotdot", "nested-dotdot", "symlink-absolute", "symlink-relative"],
    )
    def test_escaping_entries(
        self, lam: Any, server: Server, name: str, content: bytes, mode: int
    ) -> None:
        zip_bytes = entry_zip(name, content, mode)
        assert create_refused(lam, Code={"ZipFile": zip_bytes}) == (INVALID, 400, UNZIP_FAILED)
        assert not list(server.data_dir.parent.rglob("evil*"))
        links = [p for p in server.data_dir.rglob("*") if p.is_symlink()]
        assert not [p for p in links if "passwd" in os.readlink(p)]

    def test_absolute_entry(self, lam: Any, tmp_path: Path) -> None:
        target = tmp_path / "evil-absolute"
        zip_bytes = entry_zip(str(target), b"pwned")
        assert create_refused(lam, Code={"ZipFile": zip_bytes}) == (INVALID, 400, UNZIP_FAILED)
        assert not target.exists()

    @pytest.mark.parametrize("declared", [None, 1000], ids=["honest", "lying-headers"])
    def test_zip_bomb(self, lam: Any, server: Server, tmp_path: Path, declared: int | None) -> None:
        zip_bytes = bomb_zip(tmp_path / "bomb.zip", 300 << 20, declared)
        assert len(zip_bytes) < 2 << 20
        before = tree_size(server.data_dir)
        code, status, message = create_refused(lam, Code={"ZipFile": zip_bytes})
        assert (code, status) == (INVALID, 400)
        assert message == (UNZIPPED_TOO_LARGE if declared is None else UNZIP_FAILED)
        assert tree_size(server.data_dir) - before < 20 << 20

    def test_zipped_size_limit(self, lam: Any) -> None:
        zip_bytes = stored_random_zip(52_500_000)
        assert 52_428_800 < len(zip_bytes) < 52_600_000  # its base64 still fits in a request
        refused = create_refused(lam, Code={"ZipFile": zip_bytes})
        assert refused == (TOO_LARGE, 413, "Zipped size must be smaller than 52428800 bytes")

    def test_request_size_limit(self, lam: Any) -> None:
        refused = create_refused(lam, Code={"ZipFile": stored_random_zip(53_000_000)})
        message = "Request must be smaller than 70167211 bytes for the CreateFunction operation"
        assert refused == (TOO_LARGE, 413, message)


def invalid_value(value: int | str | None, path: str, constraint: str) -> tuple[str, int, str]:
    shown = "null" if value is None else f"'{value}'"
    detail = f"Value {shown} at '{path}' failed to satisfy constraint: {constraint}"
    return VALIDATION, 400, f"1 validation error detected: {detail}"


AT_MOST = "Member must have value less than or equal to {}".format
AT_LEAST = "Member must have value greater than or equal to {}".format
ROLE_PATTERN = (
    "Member must satisfy regular expression pattern: "
    r"arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+"
)
DEPRECATED = (
    "The runtime parameter of python3.7 is no longer supported for creating or updating AWS "
    "Lambda functions. We recommend you use a supported runtime while creating or updating "
    "functions."
)
RESERVED = (
    "Lambda was unable to configure your environment variables because the environment variables "
    "you have provided contains reserved keys that are currently not supported for modification. "
    "Reserved keys used in this request: AWS_REGION"
)
# settings -> AWS's refusal (None: only the code and status are AWS's; the wording is lambdad's)
BAD_SETTINGS: dict[str, tuple[dict[str, Any], tuple[str, int, str | None]]] = {
    "memory-max": ({"MemorySize": 10241}, invalid_value(10241, "memorySize", AT_MOST(10240))),
    "memory-min": ({"MemorySize": 127}, invalid_value(127, "memorySize", AT_LEAST(128))),
    "timeout-max": ({"Timeout": 901}, invalid_value(901, "timeout", AT_MOST(900))),
    "timeout-min": ({"Timeout": 0}, invalid_value(0, "timeout", AT_LEAST(1))),
    "ephemeral-max": (
        {"EphemeralStorage": {"Size": 10241}},
        invalid_value(10241, "ephemeralStorage.size", AT_MOST(10240)),
    ),
    "ephemeral-min": (
        {"EphemeralStorage": {"Size": 511}},
        invalid_value(511, "ephemeralStorage.size", AT_LEAST(512)),
    ),
    "role": ({"Role": "r1"}, invalid_value("r1", "role", ROLE_PATTERN)),
    "deprecated-runtime": ({"Runtime": "python3.7"}, (INVALID, 400, DEPRECATED)),
    "runtime-not-installed": ({"Runtime": "java25"}, (INVALID, 400, None)),
    "reserved-env": ({"Environment": {"Variables": {"AWS_REGION": "x"}}}, (INVALID, 400, RESERVED)),
}


class TestBadSettings:
    @pytest.fixture(scope="class")
    def raw(self, server: Server) -> Any:
        """A client that sends what it is given (boto3 would refuse some minimums itself)."""
        return server.client(parameter_validation=False)

    @pytest.mark.parametrize("case", BAD_SETTINGS)
    def test_create_refused(self, raw: Any, case: str) -> None:
        settings, expected = BAD_SETTINGS[case]
        code, status, message = create_refused(raw, **settings)
        assert (code, status, message if expected[2] else None) == expected

    @pytest.mark.parametrize("case", BAD_SETTINGS)
    def test_update_refused(self, raw: Any, fn: str, case: str) -> None:
        settings, expected = BAD_SETTINGS[case]
        before = raw.get_function_configuration(FunctionName=fn)
        code, status, message = refusal(
            raw.update_function_configuration, FunctionName=fn, **settings
        )
        assert (code, status, message if expected[2] else None) == expected
        assert raw.get_function_configuration(FunctionName=fn)["RevisionId"] == before["RevisionId"]

    def test_invalid_runtime(self, lam: Any) -> None:
        code, status, message = create_refused(lam, Runtime="non-existent-runtime")
        prefix = (
            "Value non-existent-runtime at 'runtime' failed to satisfy constraint: "
            "Member must satisfy enum value set: ["
        )
        suffix = "] or be a valid ARN"
        assert (code, status) == (INVALID, 400)
        assert message.startswith(prefix) and message.endswith(suffix)
        runtimes = set(message[len(prefix) : -len(suffix)].split(", "))
        assert {"python3.11", "nodejs20.x", "java21", "provided.al2023"} <= runtimes

    @pytest.mark.parametrize("missing", ["Handler", "Runtime"])
    def test_missing_handler_or_runtime(self, lam: Any, missing: str) -> None:
        message = (
            "Runtime and Handler are mandatory parameters for functions created with "
            "deployment packages."
        )
        assert create_refused(lam, **{missing: None}) == (INVALID, 400, message)

    def test_environment_size(self, lam: Any, fn: str) -> None:
        # AWS measures the variables as compact JSON in the given order; 4,096 bytes still fit.
        single = {"LARGE_VAR": "x" * 4081}
        refused = create_refused(lam, Environment={"Variables": single})
        assert refused == (INVALID, 400, ENV_TOO_LARGE + f'{{"LARGE_VAR":"{"x" * 4081}"}}')
        several = {"SMALL_VAR": "ok", "LARGE_VAR": "x" * 4064}
        measured = ENV_TOO_LARGE + f'{{"SMALL_VAR":"ok","LARGE_VAR":"{"x" * 4064}"}}'
        update = lam.update_function_configuration
        refused = refusal(update, FunctionName=fn, Environment={"Variables": several})
        assert refused == (INVALID, 400, measured)
        update(FunctionName=fn, Environment={"Variables": {"LARGE_VAR": "x" * 4080}})
        config = lam.get_function_configuration(FunctionName=fn)
        assert config["Environment"]["Variables"]["LARGE_VAR"] == "x" * 4080

    def test_duplicate_create(self, lam: Any, fn: str) -> None:
        before = lam.get_function_configuration(FunctionName=fn)
        refused = refusal(lam.create_function, **create_kwargs(fn, Handler="other.handler"))
        assert refused == ("ResourceConflictException", 409, f"Function already exist: {fn}")
        assert lam.get_function_configuration(FunctionName=fn)["RevisionId"] == before["RevisionId"]

    @pytest.mark.parametrize(
        "operation, kwargs",
        [
            ("get_function", {}),
            ("get_function_configuration", {}),
            ("update_function_code", {"ZipFile": make_zip(ECHO)}),
            ("update_function_configuration", {"Description": "x"}),
            ("delete_function", {}),
        ],
    )
    def test_unknown_function(self, lam: Any, operation: str, kwargs: dict[str, Any]) -> None:
        name = unique_name("unknown")
        refused = refusal(getattr(lam, operation), FunctionName=name, **kwargs)
        assert refused == (NOT_FOUND, 404, not_found(name))


class TestDurability:
    def test_function_survives_restart(self, tmp_path: Path) -> None:
        zip_bytes = make_zip(ECHO)
        first = start_server(tmp_path / "data")
        try:
            lam = first.client()
            kwargs = create_kwargs("durable", Code={"ZipFile": zip_bytes}, Tags={"k": "v"})
            lam.create_function(**kwargs)
            lam.get_waiter("function_active_v2").wait(FunctionName="durable")
            before = lam.get_function(FunctionName="durable")
        finally:
            first.stop()
        second = start_server(tmp_path / "data")
        try:
            lam = second.client()
            after = lam.get_function(FunctionName="durable")
            assert (after["Configuration"], after["Tags"]) == (before["Configuration"], {"k": "v"})
            assert download(after["Code"]["Location"]) == zip_bytes
            result = lam.invoke(FunctionName="durable", Payload=b'{"alive": true}')
            assert result["Payload"].read() == b'{"alive": true}'
            assert "FunctionError" not in result
            assert lam.get_account_settings()["AccountUsage"]["FunctionCount"] == 1
        finally:
            second.stop()
