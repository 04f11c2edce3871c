"""The layer operations through boto3, against a real `lambdad serve`.

Shapes, codes, statuses and messages are AWS's own, as recorded from real AWS in
/work/shared/aws-recordings/lambda/test_lambda_api.snapshot.json (TestLambdaLayer).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import ROOT, Server, make_zip, unique_name

ACCOUNT = "000000000000"
CREATED_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+0000$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
NOT_FOUND = "The resource you requested does not exist."
VERSION_TOO_LOW = "Layer Version Cannot be less than 1"
UNZIP_FAILED = "Could not unzip uploaded file. Please check your file, then try to upload again."
STALE = (
    "The Revision Id provided does not match the latest Revision Id. Call the GetLayerPolicy "
    "API to retrieve the latest Revision Id"
)
LOWERCASE_MESSAGE = {
    "InvalidParameterValueException",
    "ResourceConflictException",
    "PreconditionFailedException",
}
FILES = {"python/layer_mod.py": "VALUE = 'from the layer'\n"}


def layer_arn(name: str, account: str = ACCOUNT) -> str:
    return f"arn:aws:lambda:us-east-1:{account}:layer:{name}"


def refusal(call: Callable[..., Any], **kwargs: Any) -> tuple[str, int, str]:
    """Call, which must fail: (code, HTTP status, message); the body's casing is AWS's."""
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    response: dict[str, Any] = info.value.response
    code, message = response["Error"]["Code"], response["Error"]["Message"]
    if code in LOWERCASE_MESSAGE:
        assert (response["Type"], response["message"]) == ("User", message)
    elif code == "ResourceNotFoundException":
        assert (response["Type"], response["Message"]) == ("User", message)
    return code, response["ResponseMetadata"]["HTTPStatusCode"], message


def publish(lam: Any, name: str, files: dict[str, str] | None = None, **kwargs: Any) -> Any:
    return lam.publish_layer_version(
        LayerName=name, Content={"ZipFile": make_zip(files or FILES)}, **kwargs
    )


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        data: bytes = response.read()
        return data


def b64sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def strip(response: dict[str, Any]) -> dict[str, Any]:
    """The document without ResponseMetadata, CreatedDate (checked) and Content.Location."""
    document = {k: v for k, v in response.items() if k != "ResponseMetadata"}
    assert CREATED_DATE.match(document.pop("CreatedDate"))
    if "Content" in document:
        document["Content"] = {k: v for k, v in document["Content"].items() if k != "Location"}
    return document


# -- publishing and reading -------------------------------------------------------------------


def test_publish_answers_awss_document_and_a_working_location(lam: Any) -> None:
    name = unique_name("layer")
    zip_bytes = make_zip(FILES)
    response = lam.publish_layer_version(
        LayerName=name,
        Content={"ZipFile": zip_bytes},
        Description="my layer",
        LicenseInfo="MIT",
        CompatibleRuntimes=["python3.12", "python3.11"],
        CompatibleArchitectures=["x86_64"],
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert download(response["Content"]["Location"]) == zip_bytes
    assert strip(response) == {
        "Content": {"CodeSha256": b64sha256(zip_bytes), "CodeSize": len(zip_bytes)},
        "LayerArn": layer_arn(name),
        "LayerVersionArn": f"{layer_arn(name)}:1",
        "Description": "my layer",
        "LicenseInfo": "MIT",
        "CompatibleRuntimes": ["python3.12", "python3.11"],
        "CompatibleArchitectures": ["x86_64"],
        "Version": 1,
    }
    fetched = lam.get_layer_version(LayerName=name, VersionNumber=1)
    assert fetched["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert strip(fetched) == strip(response)
    assert fetched["CreatedDate"] == response["CreatedDate"]
    assert download(fetched["Content"]["Location"]) == zip_bytes
    by_arn = lam.get_layer_version_by_arn(Arn=f"{layer_arn(name)}:1")
    assert strip(by_arn) == strip(response)
    by_layer_arn = lam.get_layer_version(LayerName=layer_arn(name), VersionNumber=1)
    assert strip(by_layer_arn) == strip(response)


def test_optional_members_appear_only_when_published_with_them(lam: Any) -> None:
    name = unique_name("layer")
    bare = strip(publish(lam, name))
    assert set(bare) == {"Content", "LayerArn", "LayerVersionArn", "Description", "Version"}
    assert bare["Description"] == ""
    empty = strip(publish(lam, name, CompatibleRuntimes=[], CompatibleArchitectures=[]))
    assert (empty["CompatibleRuntimes"], empty["CompatibleArchitectures"]) == ([], [])
    assert empty["Version"] == 2


def test_versions_are_never_reused_after_deletion(lam: Any) -> None:
    name = unique_name("layer")
    assert [publish(lam, name)["Version"] for _ in range(2)] == [1, 2]
    listed = lam.list_layer_versions(LayerName=name)["LayerVersions"]
    assert [v["Version"] for v in listed] == [2, 1]  # newest first
    for version in (1, 2, 2):  # deleting is idempotent
        response = lam.delete_layer_version(LayerName=name, VersionNumber=version)
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert lam.list_layer_versions(LayerName=name)["LayerVersions"] == []
    assert name not in {layer["LayerName"] for layer in all_layers(lam)}
    assert refusal(lam.get_layer_version, LayerName=name, VersionNumber=1) == (
        "ResourceNotFoundException",
        404,
        NOT_FOUND,
    )
    assert publish(lam, name)["Version"] == 3


def test_unknown_layers_and_versions(lam: Any) -> None:
    name = unique_name("layer")
    publish(lam, name)
    missing = ("ResourceNotFoundException", 404, NOT_FOUND)
    assert refusal(lam.get_layer_version, LayerName=name + "-nope", VersionNumber=1) == missing
    assert refusal(lam.get_layer_version, LayerName=name, VersionNumber=2) == missing
    assert refusal(lam.get_layer_version_by_arn, Arn=f"{layer_arn(name)}:2") == missing
    for number in (0, -1):
        for call in (lam.get_layer_version, lam.delete_layer_version):
            assert refusal(call, LayerName=name, VersionNumber=number) == (
                "InvalidParameterValueException",
                400,
                VERSION_TOO_LOW,
            )
    code, status, message = refusal(lam.get_layer_version_by_arn, Arn=layer_arn(name))
    assert (code, status) == ("ValidationException", 400)
    assert message.startswith(f"1 validation error detected: Value '{layer_arn(name)}' at 'arn'")
    assert lam.list_layer_versions(LayerName=name + "-nope")["LayerVersions"] == []
    for layer, version in ((name + "-nope", 1), (name, 5)):
        response = lam.delete_layer_version(LayerName=layer, VersionNumber=version)
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 204


@pytest.mark.parametrize(
    "files",
    [
        pytest.param(b"this is not a zip", id="malformed"),
        pytest.param(make_zip({"../escape.py": "x"}), id="escaping"),
    ],
)
def test_bad_packages_are_refused_as_function_code_is(lam: Any, files: bytes) -> None:
    name = unique_name("layer")
    assert refusal(lam.publish_layer_version, LayerName=name, Content={"ZipFile": files}) == (
        "InvalidParameterValueException",
        400,
        UNZIP_FAILED,
    )
    assert lam.list_layer_versions(LayerName=name)["LayerVersions"] == []
    assert publish(lam, name)["Version"] == 1  # the refused upload took no number


# -- listing ----------------------------------------------------------------------------------


def all_layers(lam: Any, **filters: Any) -> list[dict[str, Any]]:
    pages = lam.get_paginator("list_layers").paginate(**filters)
    return [layer for page in pages for layer in page["Layers"]]


def test_list_layers_shows_the_latest_matching_version(lam: Any) -> None:
    name = unique_name("layer")
    publish(lam, name, CompatibleRuntimes=["python3.12"], CompatibleArchitectures=["x86_64"])
    publish(lam, name, CompatibleRuntimes=["nodejs20.x"], CompatibleArchitectures=["arm64"])

    def latest(**filters: Any) -> int | None:
        found = [layer for layer in all_layers(lam, **filters) if layer["LayerName"] == name]
        if not found:
            return None
        assert found[0]["LayerArn"] == layer_arn(name)
        version: int = found[0]["LatestMatchingVersion"]["Version"]
        return version

    assert latest() == 2
    assert latest(CompatibleRuntime="python3.12") == 1
    assert latest(CompatibleArchitecture="arm64") == 2
    assert latest(CompatibleRuntime="python3.12", CompatibleArchitecture="arm64") is None
    item = next(layer for layer in all_layers(lam) if layer["LayerName"] == name)
    assert strip(item["LatestMatchingVersion"]) == {
        "LayerVersionArn": f"{layer_arn(name)}:2",
        "Version": 2,
        "Description": "",
        "CompatibleRuntimes": ["nodejs20.x"],
        "CompatibleArchitectures": ["arm64"],
    }


def test_list_layer_versions_filters(lam: Any) -> None:
    name = unique_name("layer")
    for runtimes in (["python3.12"], ["nodejs20.x"], ["python3.12", "nodejs20.x"]):
        publish(lam, name, CompatibleRuntimes=runtimes)

    def versions(**filters: Any) -> list[int]:
        listed = lam.list_layer_versions(LayerName=name, **filters)["LayerVersions"]
        return [v["Version"] for v in listed]

    assert versions() == [3, 2, 1]
    assert versions(CompatibleRuntime="python3.12") == [3, 1]
    assert versions(CompatibleRuntime="nodejs20.x") == [3, 2]
    assert versions(CompatibleArchitecture="x86_64") == []


@pytest.mark.parametrize(
    ("member", "wire", "value"),
    [
        ("CompatibleRuntime", "compatibleRuntime", "runtimedoesnotexist"),
        ("CompatibleArchitecture", "compatibleArchitecture", "archdoesnotexist"),
    ],
)
def test_invalid_filters_are_validation_errors(
    lam: Any, member: str, wire: str, value: str
) -> None:
    for call, extra in ((lam.list_layers, {}), (lam.list_layer_versions, {"LayerName": "any"})):
        code, status, message = refusal(call, **extra, **{member: value})
        assert (code, status) == ("ValidationException", 400)
        assert message.startswith(
            f"1 validation error detected: Value '{value}' at '{wire}' failed to satisfy "
            "constraint: Member must satisfy enum value set: ["
        )


def test_pagination(lam: Any) -> None:
    prefix = unique_name("page")
    names = [f"{prefix}-{i}" for i in range(5)]
    for name in names:
        publish(lam, name)
    for _ in range(4):
        publish(lam, names[0])
    pages = list(lam.get_paginator("list_layers").paginate(PaginationConfig={"PageSize": 2}))
    assert all(len(page["Layers"]) <= 2 for page in pages)
    listed = [layer["LayerName"] for page in pages for layer in page["Layers"]]
    assert [n for n in listed if n.startswith(prefix)] == names
    assert len(listed) == len(set(listed))
    paginator = lam.get_paginator("list_layer_versions")
    version_pages = list(paginator.paginate(LayerName=names[0], PaginationConfig={"PageSize": 2}))
    assert [[v["Version"] for v in page["LayerVersions"]] for page in version_pages] == [
        [5, 4],
        [3, 2],
        [1],
    ]
    first = lam.list_layer_versions(LayerName=names[0], MaxItems=3)
    rest = lam.list_layer_versions(LayerName=names[0], Marker=first["NextMarker"])
    assert [v["Version"] for v in rest["LayerVersions"]] == [2, 1] and "NextMarker" not in rest


# -- policies ---------------------------------------------------------------------------------


def add_permission(lam: Any, name: str, sid: str, principal: str = "*", **kwargs: Any) -> Any:
    return lam.add_layer_version_permission(
        LayerName=name,
        VersionNumber=1,
        StatementId=sid,
        Action="lambda:GetLayerVersion",
        Principal=principal,
        **kwargs,
    )


def test_policy_lifecycle(lam: Any) -> None:
    name = unique_name("layer")
    publish(lam, name)
    resource = f"{layer_arn(name)}:1"
    assert refusal(lam.get_layer_version_policy, LayerName=name, VersionNumber=1) == (
        "ResourceNotFoundException",
        404,
        "No policy is associated with the given resource.",
    )
    added = add_permission(lam, name, "s1")
    assert added["ResponseMetadata"]["HTTPStatusCode"] == 201 and UUID.match(added["RevisionId"])
    s1 = {
        "Sid": "s1",
        "Effect": "Allow",
        "Principal": "*",
        "Action": "lambda:GetLayerVersion",
        "Resource": resource,
    }
    assert json.loads(added["Statement"]) == s1
    assert list(json.loads(added["Statement"])) == list(s1)  # AWS's member order
    second = add_permission(lam, name, "s2", "123456789012", RevisionId=added["RevisionId"])
    s2 = {**s1, "Sid": "s2", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}}
    assert json.loads(second["Statement"]) == s2
    third = add_permission(lam, name, "s3", OrganizationId="o-abcdefghij")
    s3 = {**s1, "Sid": "s3", "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-abcdefghij"}}}
    assert json.loads(third["Statement"]) == s3
    policy = lam.get_layer_version_policy(LayerName=name, VersionNumber=1)
    assert policy["RevisionId"] == third["RevisionId"]
    assert json.loads(policy["Policy"]) == {
        "Version": "2012-10-17",
        "Id": "default",
        "Statement": [s1, s2, s3],
    }
    removed = lam.remove_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="s2")
    assert removed["ResponseMetadata"]["HTTPStatusCode"] == 204
    after = lam.get_layer_version_policy(LayerName=name, VersionNumber=1)
    assert json.loads(after["Policy"])["Statement"] == [s1, s3]
    assert after["RevisionId"] not in (added["RevisionId"], second["RevisionId"])


def test_policy_errors(lam: Any) -> None:
    name = unique_name("layer")
    publish(lam, name)
    revision = add_permission(lam, name, "s1")["RevisionId"]
    assert refusal(add_permission, lam=lam, name=name, sid="s1") == (
        "ResourceConflictException",
        409,
        "The statement id (s1) provided already exists. Please provide a new statement id, or "
        "remove the existing statement.",
    )
    stale = ("PreconditionFailedException", 412, STALE)
    assert refusal(add_permission, lam=lam, name=name, sid="s2", RevisionId="wrong") == stale
    assert (
        refusal(
            lam.remove_layer_version_permission,
            LayerName=name,
            VersionNumber=1,
            StatementId="s1",
            RevisionId="wrong",
        )
        == stale
    )
    assert refusal(
        lam.remove_layer_version_permission, LayerName=name, VersionNumber=1, StatementId="nope"
    ) == ("ResourceNotFoundException", 404, "Statement nope is not found in resource policy.")
    code, status, message = refusal(add_permission, lam=lam, name=name, sid="s3", principal="x")
    assert (code, status) == ("ValidationException", 400) and "at 'principal'" in message
    for layer in (name + "-nope", name):
        missing = f"Layer version {layer_arn(layer)}:2 does not exist."
        for call in (lam.get_layer_version_policy, lam.remove_layer_version_permission):
            extra = {"StatementId": "s1"} if call == lam.remove_layer_version_permission else {}
            assert refusal(call, LayerName=layer, VersionNumber=2, **extra) == (
                "ResourceNotFoundException",
                404,
                missing,
            )
    lam.remove_layer_version_permission(
        LayerName=name, VersionNumber=1, StatementId="s1", RevisionId=revision
    )
    assert refusal(lam.get_layer_version_policy, LayerName=name, VersionNumber=1)[2] == (
        "No policy is associated with the given resource."
    )


# -- other accounts ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def team(server: Server) -> dict[str, str]:
    command = ["accounts", "create", unique_name("team"), "--data-dir", str(server.data_dir)]
    result = subprocess.run(
        [sys.executable, "-m", "lambdad.cli.main", *command, "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    account: dict[str, str] = json.loads(result.stdout)
    return account


@pytest.fixture(scope="module")
def team_lam(server: Server, team: dict[str, str]) -> Any:
    return boto3.client(
        "lambda",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=team["AccessKeyId"],
        aws_secret_access_key=team["SecretAccessKey"],
        config=Config(retries={"max_attempts": 1}),
    )


def denied(account: str, action: str, resource: str) -> tuple[str, int, str]:
    return (
        "AccessDeniedException",
        403,
        f"User: arn:aws:iam::{account}:root is not authorized to perform: {action} on resource: "
        f"{resource} because no resource-based policy allows the {action} action",
    )


def test_another_account_reads_a_version_only_when_a_policy_allows(
    lam: Any, team_lam: Any, team: dict[str, str]
) -> None:
    name = unique_name("shared")
    zip_bytes = make_zip(FILES)
    lam.publish_layer_version(LayerName=name, Content={"ZipFile": zip_bytes})
    version_arn = f"{layer_arn(name)}:1"
    team_id = team["AccountId"]
    no = denied(team_id, "lambda:GetLayerVersion", version_arn)
    assert refusal(team_lam.get_layer_version, LayerName=layer_arn(name), VersionNumber=1) == no
    assert refusal(team_lam.get_layer_version_by_arn, Arn=version_arn) == no
    # Without an ARN, a name is the caller's own layer, which does not exist.
    assert refusal(team_lam.get_layer_version, LayerName=name, VersionNumber=1)[0] == (
        "ResourceNotFoundException"
    )
    for sid, principal in (("team", team_id), ("everyone", "*")):
        revision = add_permission(lam, name, sid, principal)["RevisionId"]
        got = team_lam.get_layer_version_by_arn(Arn=version_arn)
        assert got["LayerVersionArn"] == version_arn
        assert download(got["Content"]["Location"]) == zip_bytes
        team_lam.get_layer_version(LayerName=layer_arn(name), VersionNumber=1)
        lam.remove_layer_version_permission(
            LayerName=name, VersionNumber=1, StatementId=sid, RevisionId=revision
        )
        assert refusal(team_lam.get_layer_version_by_arn, Arn=version_arn) == no
    add_permission(lam, name, "everyone", "*")
    assert refusal(
        team_lam.delete_layer_version, LayerName=layer_arn(name), VersionNumber=1
    ) == denied(team_id, "lambda:DeleteLayerVersion", version_arn)
    assert refusal(team_lam.list_layer_versions, LayerName=layer_arn(name)) == denied(
        team_id, "lambda:ListLayerVersions", layer_arn(name)
    )
    assert name not in {layer["LayerName"] for layer in all_layers(team_lam)}
    lam.get_layer_version(LayerName=name, VersionNumber=1)  # still there
