"""Versions and aliases through boto3, against a real `lambdad serve`.

Shapes, codes and messages are AWS's, as recorded from real AWS in
/work/shared/aws-recordings/lambda/test_lambda_api.snapshot.json and test_lambda.snapshot.json.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import (
    Server,
    create_function,
    logged,
    make_zip,
    start_server,
    unique_name,
    wait_for,
)

ACCOUNT = "000000000000"
NOT_FOUND = "ResourceNotFoundException"
INVALID = "InvalidParameterValueException"
VALIDATION = "ValidationException"
CONFLICT = "ResourceConflictException"
STALE_REVISION = (
    "The Revision Id provided does not match the latest Revision Id. Call the "
    "GetFunction/GetAlias API to retrieve the latest Revision Id"
)
WEIGHTS_PATH = "at 'routingConfig.additionalVersionWeights' failed to satisfy constraint:"


def code(tag: str) -> dict[str, str]:
    """A function that says which code it is, which version ran and how it was invoked."""
    return {
        "app.py": (
            "CALLS = 0\n\n"
            "def handler(event, context):\n"
            "    global CALLS\n"
            "    CALLS += 1\n"
            f"    return {{'code': {tag!r}, 'version': context.function_version,\n"
            "            'arn': context.invoked_function_arn, 'calls': CALLS}\n"
        )
    }


def arn(name: str, qualifier: str | None = None) -> str:
    base = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{name}"
    return f"{base}:{qualifier}" if qualifier else base


def not_found(name: str, qualifier: str | None = None) -> str:
    return f"Function not found: {arn(name, qualifier)}"


def b64sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def refusal(call: Callable[..., Any], **kwargs: Any) -> tuple[str, int, str]:
    """Call, which must fail: (code, HTTP status, message). Checks the body's casing is AWS's
    for the modelled errors: `Message` for not-found, `message` for the others ("Type" is
    checked by the callers)."""
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    response: dict[str, Any] = info.value.response
    code_, message = response["Error"]["Code"], response["Error"]["Message"]
    if code_ != VALIDATION:  # not in Lambda's model: botocore shows no body members
        body_message = response.get("Message") if code_ == NOT_FOUND else response.get("message")
        assert body_message == message
    return code_, response["ResponseMetadata"]["HTTPStatusCode"], message


def typed(call: Callable[..., Any], **kwargs: Any) -> str | None:
    """The "Type" member of the error body a failing call gets (AWS omits it for some)."""
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    found: str | None = info.value.response.get("Type")
    return found


def invoke(lam: Any, **kwargs: Any) -> tuple[str, dict[str, Any]]:
    response = lam.invoke(**kwargs)
    assert response["StatusCode"] == 200
    assert "FunctionError" not in response, response["Payload"].read()
    return response["ExecutedVersion"], json.loads(response["Payload"].read())


def versions_of(lam: Any, name: str, **pagination: Any) -> list[str]:
    pages = lam.get_paginator("list_versions_by_function").paginate(
        FunctionName=name, PaginationConfig=pagination
    )
    return [v["Version"] for page in pages for v in page["Versions"]]


@pytest.fixture
def fn(lam: Any) -> Iterator[str]:
    """A function with versions 1 (code "v1") and 2 (code "v2"), $LATEST at code "v3"."""
    name = create_function(lam, code("v1"), Description="first")
    lam.publish_version(FunctionName=name)
    lam.update_function_code(FunctionName=name, ZipFile=make_zip(code("v2")))
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    lam.publish_version(FunctionName=name)
    lam.update_function_code(FunctionName=name, ZipFile=make_zip(code("v3")))
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    yield name
    with contextlib.suppress(ClientError):
        lam.delete_function(FunctionName=name)


@pytest.fixture(scope="module")
def versioned(lam: Any) -> Iterator[str]:
    """Like `fn`, shared by tests that only read, with an alias "live" for version 1."""
    name = create_function(lam, code("v1"))
    lam.publish_version(FunctionName=name)
    lam.update_function_code(FunctionName=name, ZipFile=make_zip(code("v2")))
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    lam.publish_version(FunctionName=name)
    lam.update_function_code(FunctionName=name, ZipFile=make_zip(code("v3")))
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    yield name
    lam.delete_function(FunctionName=name)


@pytest.fixture(scope="module")
def loose(server: Server) -> Any:
    """A client without botocore's own parameter checks, to see the server's."""
    return server.client(parameter_validation=False)


class TestPublishVersion:
    def test_publish_snapshots_latest(self, lam: Any) -> None:
        name = create_function(lam, code("v1"), Description="No version :(")
        before = lam.get_function_configuration(FunctionName=name)
        published = lam.publish_version(FunctionName=name, Description="First version :)")
        assert published.pop("ResponseMetadata")["HTTPStatusCode"] == 201
        assert published["Version"] == "1"
        assert published["FunctionArn"] == arn(name, "1")
        assert published["Description"] == "First version :)"
        assert (published["State"], published["LastUpdateStatus"]) == ("Active", "Successful")
        for same in ("CodeSha256", "CodeSize", "Runtime", "Handler", "MemorySize", "Timeout"):
            assert published[same] == before[same]
        assert published["RevisionId"] != before["RevisionId"]
        after = lam.get_function_configuration(FunctionName=name)
        # Publishing changes $LATEST's RevisionId, but nothing else (recorded).
        assert after["RevisionId"] not in (before["RevisionId"], published["RevisionId"])
        assert after["Description"] == "No version :("
        got = lam.get_function(FunctionName=name, Qualifier="1")["Configuration"]
        assert got == published
        lam.get_waiter("published_version_active").wait(FunctionName=name, Qualifier="1")
        lam.delete_function(FunctionName=name)

    def test_publishing_nothing_new_answers_the_newest_version(self, lam: Any) -> None:
        name = create_function(lam, code("v1"))
        first = lam.publish_version(FunctionName=name)
        latest_revision = lam.get_function(FunctionName=name)["Configuration"]["RevisionId"]
        again = lam.publish_version(FunctionName=name, Description="ignored")
        assert (again["Version"], again["RevisionId"]) == ("1", first["RevisionId"])
        assert again["Description"] == first["Description"] == ""
        # No new version, no new $LATEST revision either (recorded).
        assert lam.get_function(FunctionName=name)["Configuration"]["RevisionId"] == latest_revision
        lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"AB": "1"}})
        lam.get_waiter("function_updated_v2").wait(FunctionName=name)
        second = lam.publish_version(FunctionName=name)
        assert second["Version"] == "2"
        assert second["Environment"] == {"Variables": {"AB": "1"}}
        assert versions_of(lam, name) == ["$LATEST", "1", "2"]
        lam.delete_function(FunctionName=name)

    def test_versions_are_immutable(self, lam: Any, fn: str) -> None:
        v1 = lam.get_function(FunctionName=fn, Qualifier="1")
        assert v1["Configuration"]["Description"] == "first"
        assert v1["Configuration"]["CodeSha256"] == b64sha256(make_zip(code("v1")))
        with urlopen(v1["Code"]["Location"]) as response:
            assert response.read() == make_zip(code("v1"))
        lam.update_function_configuration(FunctionName=fn, Description="changed", MemorySize=256)
        lam.get_waiter("function_updated_v2").wait(FunctionName=fn)
        again = lam.get_function_configuration(FunctionName=fn, Qualifier="1")
        assert (again["Description"], again["MemorySize"]) == ("first", 128)
        assert again["RevisionId"] == v1["Configuration"]["RevisionId"]
        assert invoke(lam, FunctionName=fn, Qualifier="1")[1]["code"] == "v1"

    def test_list_versions(self, lam: Any, fn: str) -> None:
        response = lam.list_versions_by_function(FunctionName=fn)
        items = response["Versions"]
        assert [v["Version"] for v in items] == ["$LATEST", "1", "2"]
        assert [v["FunctionArn"] for v in items] == [arn(fn, "$LATEST"), arn(fn, "1"), arn(fn, "2")]
        assert "NextMarker" not in response
        for item in items:
            for absent in ("State", "LastUpdateStatus", "RuntimeVersionConfig"):
                assert absent not in item
            assert item["LoggingConfig"] == {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{fn}"}
        first = lam.list_versions_by_function(FunctionName=fn, MaxItems=2)
        assert [v["Version"] for v in first["Versions"]] == ["$LATEST", "1"]
        rest = lam.list_versions_by_function(FunctionName=fn, Marker=first["NextMarker"])
        assert [v["Version"] for v in rest["Versions"]] == ["2"]
        assert versions_of(lam, fn, PageSize=1) == ["$LATEST", "1", "2"]

    def test_numbers_are_never_reused(self, lam: Any, fn: str) -> None:
        assert (
            lam.delete_function(FunctionName=fn, Qualifier="2")["ResponseMetadata"][
                "HTTPStatusCode"
            ]
            == 204
        )
        assert versions_of(lam, fn) == ["$LATEST", "1"]
        assert refusal(lam.get_function, FunctionName=fn, Qualifier="2") == (
            NOT_FOUND,
            404,
            not_found(fn, "2"),
        )
        assert lam.publish_version(FunctionName=fn)["Version"] == "3"
        assert versions_of(lam, fn) == ["$LATEST", "1", "3"]

    def test_code_sha256_precondition(self, lam: Any) -> None:
        zip_bytes = make_zip(code("v1"))
        name = create_function(lam, code("v1"))
        wrong = refusal(lam.publish_version, FunctionName=name, CodeSha256="somenonexistentsha256")
        assert wrong == (
            INVALID,
            400,
            f"CodeSHA256 (somenonexistentsha256) is different from current CodeSHA256 in $LATEST"
            f" ({b64sha256(zip_bytes)}). Please try again with the CodeSHA256 in $LATEST.",
        )
        assert typed(lam.publish_version, FunctionName=name, CodeSha256="x") == "User"
        assert versions_of(lam, name) == ["$LATEST"]
        published = lam.publish_version(FunctionName=name, CodeSha256=b64sha256(zip_bytes))
        assert published["Version"] == "1"
        lam.delete_function(FunctionName=name)

    def test_revision_id_precondition(self, lam: Any) -> None:
        name = create_function(lam, code("v1"))
        wrong = refusal(lam.publish_version, FunctionName=name, RevisionId="wrong")
        assert wrong == ("PreconditionFailedException", 412, STALE_REVISION)
        revision = lam.get_function(FunctionName=name)["Configuration"]["RevisionId"]
        assert lam.publish_version(FunctionName=name, RevisionId=revision)["Version"] == "1"
        lam.delete_function(FunctionName=name)

    def test_publish_on_create_and_on_code_update(self, lam: Any) -> None:
        name = unique_name("publish")
        created = lam.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role="arn:aws:iam::000000000000:role/lambda-role",
            Handler="app.handler",
            Code={"ZipFile": make_zip(code("v1"))},
            Publish=True,
        )
        # The create response names the version, with the unqualified ARN (recorded).
        assert (created["Version"], created["FunctionArn"]) == ("1", arn(name))
        assert created["State"] == "Pending"
        lam.get_waiter("published_version_active").wait(FunctionName=name, Qualifier="1")
        assert lam.get_function(FunctionName=name)["Configuration"]["Version"] == "$LATEST"
        updated = lam.update_function_code(
            FunctionName=name, ZipFile=make_zip(code("v2")), Publish=True
        )
        assert (updated["Version"], updated["FunctionArn"]) == ("2", arn(name, "2"))
        assert (updated["State"], updated["StateReasonCode"]) == ("Pending", "Creating")
        assert "LastUpdateStatus" not in updated
        assert updated["CodeSha256"] == b64sha256(make_zip(code("v2")))
        lam.get_waiter("published_version_active").wait(FunctionName=name, Qualifier="2")
        assert invoke(lam, FunctionName=name, Qualifier="1")[1]["code"] == "v1"
        assert invoke(lam, FunctionName=name, Qualifier="2")[1]["code"] == "v2"
        assert invoke(lam, FunctionName=name)[1]["code"] == "v2"
        lam.delete_function(FunctionName=name)

    def test_unknown_function_or_version(self, lam: Any, fn: str) -> None:
        missing = unique_name("missing")
        for call in (lam.publish_version, lam.list_versions_by_function):
            assert refusal(call, FunctionName=missing) == (NOT_FOUND, 404, not_found(missing))
        for call in (lam.get_function, lam.get_function_configuration):
            assert refusal(call, FunctionName=fn, Qualifier="1221") == (
                NOT_FOUND,
                404,
                not_found(fn, "1221"),
            )

    def test_tags_stay_on_the_function(self, lam: Any, fn: str) -> None:
        lam.tag_resource(Resource=arn(fn), Tags={"team": "core"})
        assert lam.get_function(FunctionName=fn, Qualifier="1")["Tags"] == {"team": "core"}
        message = (
            "Tags on function aliases and versions are not supported. Please specify a function "
            "ARN."
        )
        for qualifier in ("1", "$LATEST"):
            refused = refusal(lam.tag_resource, Resource=arn(fn, qualifier), Tags={"a": "b"})
            assert refused == (INVALID, 400, message)


class TestDeleteVersion:
    def test_delete_refusals(self, lam: Any, fn: str) -> None:
        latest = refusal(lam.delete_function, FunctionName=fn, Qualifier="$LATEST")
        assert latest == (
            INVALID,
            400,
            "$LATEST version cannot be deleted without deleting the function.",
        )
        lam.create_alias(FunctionName=fn, Name="live", FunctionVersion="1")
        alias = refusal(lam.delete_function, FunctionName=fn, Qualifier="live")
        assert alias == (INVALID, 400, "Deletion of aliases is not currently supported.")
        in_use = (
            CONFLICT,
            409,
            "Unable to delete version because the following aliases reference it: [live]",
        )
        assert refusal(lam.delete_function, FunctionName=fn, Qualifier="1") == in_use
        assert refusal(lam.delete_function, FunctionName=f"{fn}:1") == in_use
        lam.update_alias(
            FunctionName=fn,
            Name="live",
            FunctionVersion="$LATEST",
            RoutingConfig={"AdditionalVersionWeights": {}},
        )
        lam.create_alias(
            FunctionName=fn,
            Name="canary",
            FunctionVersion="1",
            RoutingConfig={"AdditionalVersionWeights": {"2": 0.1}},
        )
        routed = refusal(lam.delete_function, FunctionName=fn, Qualifier="2")
        assert (
            routed[2]
            == "Unable to delete version because the following aliases reference it: [canary]"
        )
        lam.delete_alias(FunctionName=fn, Name="canary")
        lam.delete_function(FunctionName=arn(fn, "2"))
        assert versions_of(lam, fn) == ["$LATEST", "1"]

    def test_deleting_the_function_deletes_versions_and_aliases(self, lam: Any) -> None:
        name = create_function(lam, code("v1"))
        lam.publish_version(FunctionName=name)
        lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
        lam.delete_function(FunctionName=name)
        for call, kwargs in (
            (lam.get_function, {"Qualifier": "1"}),
            (lam.get_alias, {"Name": "live"}),
            (lam.list_aliases, {}),
        ):
            assert refusal(call, FunctionName=name, **kwargs)[:2] == (NOT_FOUND, 404)
        create_function(lam, code("again"), name=name)
        assert versions_of(lam, name) == ["$LATEST"]
        assert lam.publish_version(FunctionName=name)["Version"] == "1"  # a new function
        assert lam.list_aliases(FunctionName=name)["Aliases"] == []
        lam.delete_function(FunctionName=name)


class TestAliases:
    def test_alias_lifecycle(self, lam: Any, fn: str) -> None:
        created = lam.create_alias(
            FunctionName=fn,
            Name="live",
            FunctionVersion="1",
            Description="custom-alias",
            RoutingConfig={"AdditionalVersionWeights": {"2": 0.2}},
        )
        assert created.pop("ResponseMetadata")["HTTPStatusCode"] == 201
        revision = created.pop("RevisionId")
        assert created == {
            "AliasArn": arn(fn, "live"),
            "Name": "live",
            "FunctionVersion": "1",
            "Description": "custom-alias",
            "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.2}},
        }
        got = lam.get_alias(FunctionName=fn, Name="live")
        got.pop("ResponseMetadata")
        assert got == {**created, "RevisionId": revision}
        plain = lam.create_alias(FunctionName=fn, Name="plain", FunctionVersion="2")
        assert (plain["Description"], "RoutingConfig" in plain) == ("", False)
        # Aliases do not touch the revisions of $LATEST or of versions (recorded).
        before = lam.get_function(FunctionName=fn)["Configuration"]["RevisionId"]
        lam.create_alias(FunctionName=fn, Name="latest", FunctionVersion="$LATEST")
        assert lam.get_function(FunctionName=fn)["Configuration"]["RevisionId"] == before

        pages = lam.get_paginator("list_aliases").paginate(
            FunctionName=fn, PaginationConfig={"PageSize": 1}
        )
        listed = [a for page in pages for a in page["Aliases"]]
        assert [a["Name"] for a in listed] == ["latest", "live", "plain"]
        assert listed[1] == got | {"RevisionId": revision}
        filtered = lam.list_aliases(FunctionName=fn, FunctionVersion="1")["Aliases"]
        assert [a["Name"] for a in filtered] == ["live"]

        updated = lam.update_alias(
            FunctionName=fn, Name="live", RoutingConfig={"AdditionalVersionWeights": {}}
        )
        assert "RoutingConfig" not in updated
        assert updated["RevisionId"] != revision
        unchanged = lam.update_alias(FunctionName=fn, Name="live")
        assert unchanged["RevisionId"] != updated["RevisionId"]  # a new one anyway (recorded)
        assert (unchanged["FunctionVersion"], unchanged["Description"]) == ("1", "custom-alias")
        stale = refusal(lam.update_alias, FunctionName=fn, Name="live", RevisionId=revision)
        assert stale == ("PreconditionFailedException", 412, STALE_REVISION)
        moved = lam.update_alias(
            FunctionName=fn,
            Name="live",
            FunctionVersion="2",
            Description="moved",
            RevisionId=unchanged["RevisionId"],
        )
        assert (moved["FunctionVersion"], moved["Description"]) == ("2", "moved")

        deleted = lam.delete_alias(FunctionName=fn, Name="live")
        assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
        again = lam.delete_alias(FunctionName=fn, Name="live")  # no error (recorded)
        assert again["ResponseMetadata"]["HTTPStatusCode"] == 204
        assert refusal(lam.get_alias, FunctionName=fn, Name="live") == (
            NOT_FOUND,
            404,
            f"Cannot find alias arn: {arn(fn, 'live')}",
        )
        assert refusal(lam.update_alias, FunctionName=fn, Name="live", Description="x") == (
            NOT_FOUND,
            404,
            f"Alias not found: {arn(fn, 'live')}",
        )

    def test_function_reads_through_an_alias(self, lam: Any, fn: str) -> None:
        lam.create_alias(FunctionName=fn, Name="live", FunctionVersion="1")
        for kwargs in (
            {"FunctionName": fn, "Qualifier": "live"},
            {"FunctionName": arn(fn, "live")},
        ):
            config = lam.get_function(**kwargs)["Configuration"]
            assert (config["Version"], config["FunctionArn"]) == ("1", arn(fn, "live"))
            assert lam.get_function_configuration(**kwargs)["FunctionArn"] == arn(fn, "live")
        for kwargs in (
            {"FunctionName": fn, "Qualifier": "nope"},
            {"FunctionName": arn(fn, "nope")},
        ):
            assert refusal(lam.get_function, **kwargs) == (NOT_FOUND, 404, not_found(fn, "nope"))

    def test_routing_config_refusals(self, loose: Any, fn: str) -> None:
        def create(**kwargs: Any) -> Any:
            return loose.create_alias(FunctionName=fn, Name="custom", **kwargs)

        def weights(**extra: float) -> dict[str, Any]:
            return {"AdditionalVersionWeights": extra}

        cases: list[tuple[dict[str, Any], tuple[str, int, str]]] = [
            (
                {"FunctionVersion": "1", "RoutingConfig": weights(**{"1": 0.8, "2": 0.2})},
                (
                    INVALID,
                    400,
                    "Number of items in AdditionalVersionWeights cannot be greater than 1",
                ),
            ),
            (
                {"FunctionVersion": "1", "RoutingConfig": weights(**{"2": 2})},
                (
                    VALIDATION,
                    400,
                    f"1 validation error detected: Value '{{2=2.0}}' {WEIGHTS_PATH} Map value "
                    "must satisfy constraint: [Member must have value less than or equal to 1.0, "
                    "Member must have value greater than or equal to 0.0, Member must not be null]",
                ),
            ),
            (
                {"FunctionVersion": "1", "RoutingConfig": weights(**{"2": -1})},
                (
                    VALIDATION,
                    400,
                    f"1 validation error detected: Value '{{2=-1.0}}' {WEIGHTS_PATH} Map value "
                    "must satisfy constraint: [Member must have value less than or equal to 1.0, "
                    "Member must have value greater than or equal to 0.0, Member must not be null]",
                ),
            ),
            (
                {"FunctionVersion": "1", "RoutingConfig": weights(**{"1": 0.5})},
                (
                    INVALID,
                    400,
                    "Invalid function version 1. Function version 1 is already included in "
                    "routing configuration.",
                ),
            ),
            (
                {"FunctionVersion": "10", "RoutingConfig": weights(**{"2": 0.5})},
                (NOT_FOUND, 404, not_found(fn, "10")),
            ),
            (
                {"FunctionVersion": "1", "RoutingConfig": weights(**{"10": 0.5})},
                (NOT_FOUND, 404, not_found(fn, "10")),
            ),
            (
                {"FunctionVersion": "$LATEST", "RoutingConfig": weights(**{"1": 0.5})},
                (
                    INVALID,
                    400,
                    "$LATEST is not supported for an alias pointing to more than 1 version",
                ),
            ),
            (
                {"FunctionVersion": "1", "RoutingConfig": weights(**{"$LATEST": 0.5})},
                (
                    VALIDATION,
                    400,
                    f"1 validation error detected: Value '{{$LATEST=0.5}}' {WEIGHTS_PATH} Map keys "
                    "must satisfy constraint: [Member must have length less than or equal to "
                    "1024, Member must have length greater than or equal to 1, Member must "
                    "satisfy regular expression pattern: [0-9]+]",
                ),
            ),
        ]
        for kwargs, expected in cases:
            assert refusal(create, **kwargs) == expected, kwargs
        # AWS sends that one $LATEST refusal without "Type" (recorded).
        assert typed(create, FunctionVersion="$LATEST", RoutingConfig=weights(**{"1": 0.5})) is None
        assert typed(create, FunctionVersion="1", RoutingConfig=weights(**{"1": 0.5})) == "User"
        assert refusal(
            loose.create_alias,
            FunctionName=f"{fn}-unknown",
            Name="custom",
            FunctionVersion="1",
            RoutingConfig=weights(**{"2": 0.5}),
        ) == (NOT_FOUND, 404, not_found(f"{fn}-unknown", "1"))
        assert refusal(loose.create_alias, FunctionName=fn, Name="2024", FunctionVersion="1") == (
            VALIDATION,
            400,
            "1 validation error detected: Value '2024' at 'name' failed to satisfy constraint: "
            "Member must satisfy regular expression pattern: (?!^[0-9]+$)([a-zA-Z0-9-_]+)",
        )
        empty = create(FunctionVersion="1", RoutingConfig=weights())
        assert "RoutingConfig" not in empty
        assert refusal(create, FunctionVersion="1") == (
            CONFLICT,
            409,
            f"Alias already exists: {arn(fn, 'custom')}",
        )
        updated = refusal(
            loose.update_alias,
            FunctionName=fn,
            Name="custom",
            FunctionVersion="2",
            RoutingConfig=weights(**{"2": 0.5}),
        )
        assert updated[2] == (
            "Invalid function version 2. Function version 2 is already included in routing "
            "configuration."
        )


class TestInvokeQualifiers:
    @pytest.mark.parametrize(
        ("form", "executed", "invoked"),
        [
            ({"FunctionName": "{n}"}, "$LATEST", ""),
            ({"FunctionName": "{n}:$LATEST"}, "$LATEST", "$LATEST"),
            ({"FunctionName": "{n}", "Qualifier": "$LATEST"}, "$LATEST", "$LATEST"),
            ({"FunctionName": "{n}:1"}, "1", "1"),
            ({"FunctionName": "{n}", "Qualifier": "2"}, "2", "2"),
            ({"FunctionName": "{arn}:2"}, "2", "2"),
            ({"FunctionName": "{arn}", "Qualifier": "1"}, "1", "1"),
            ({"FunctionName": "000000000000:function:{n}:live"}, "1", "live"),
            ({"FunctionName": "{arn}:live"}, "1", "live"),
            ({"FunctionName": "{arn}:live", "Qualifier": "live"}, "1", "live"),
            ({"FunctionName": "{n}", "Qualifier": "live"}, "1", "live"),
        ],
    )
    def test_every_form_of_name_and_qualifier(
        self, lam: Any, versioned: str, form: dict[str, str], executed: str, invoked: str
    ) -> None:
        fn = versioned
        kwargs = {k: v.format(n=fn, arn=arn(fn)) for k, v in form.items()}
        version, body = invoke(lam, **kwargs)
        assert (version, body["version"]) == (executed, executed)
        assert body["code"] == {"$LATEST": "v3", "1": "v1", "2": "v2"}[executed]
        assert body["arn"] == arn(fn, invoked or None)

    def test_unknown_qualifiers_and_mismatches(self, lam: Any, versioned: str) -> None:
        fn = versioned
        for kwargs, qualifier in (
            ({"FunctionName": f"{fn}:nope"}, "nope"),
            ({"FunctionName": fn, "Qualifier": "99"}, "99"),
            ({"FunctionName": arn(fn, "99")}, "99"),
        ):
            assert refusal(lam.invoke, **kwargs) == (NOT_FOUND, 404, not_found(fn, qualifier))
        mismatch = refusal(lam.invoke, FunctionName=arn(fn, "1"), Qualifier="2")
        assert mismatch == (
            INVALID,
            400,
            "The derived qualifier from the function name does not match the specified qualifier.",
        )
        for call in (lam.get_function, lam.get_function_configuration, lam.delete_function):
            assert refusal(call, FunctionName=arn(fn, "1"), Qualifier="$LATEST")[2] == mismatch[2]

    def test_each_version_has_its_own_environments(self, lam: Any, fn: str) -> None:
        calls = [invoke(lam, FunctionName=fn, Qualifier="1")[1]["calls"] for _ in range(3)]
        assert calls == [1, 2, 3]  # one warm environment of version 1
        assert invoke(lam, FunctionName=fn, Qualifier="2")[1]["calls"] == 1
        assert invoke(lam, FunctionName=fn)[1]["calls"] == 1

    def test_weighted_routing_splits_invocations(self, lam: Any) -> None:
        name = create_function(lam, {"app.py": "def handler(event, context):\n    return 0\n"})
        lam.publish_version(FunctionName=name)
        lam.update_function_configuration(FunctionName=name, Description="two")
        lam.get_waiter("function_updated_v2").wait(FunctionName=name)
        lam.publish_version(FunctionName=name)
        lam.create_alias(
            FunctionName=name,
            Name="canary",
            FunctionVersion="1",
            RoutingConfig={"AdditionalVersionWeights": {"2": 0.3}},
        )

        def one(_: int) -> str:
            response = lam.invoke(FunctionName=name, Qualifier="canary", Payload=b"{}")
            assert response["Payload"].read() == b"0"
            executed: str = response["ExecutedVersion"]
            return executed

        with ThreadPoolExecutor(8) as pool:
            counts = collections.Counter(pool.map(one, range(1000)))
        assert set(counts) == {"1", "2"}
        assert abs(counts["2"] / 1000 - 0.3) <= 0.05, counts
        lam.delete_function(FunctionName=name)

    def test_event_invocation_of_an_alias_runs_its_version(self, server: Server, lam: Any) -> None:
        name = create_function(lam, code("v1"))
        lam.publish_version(FunctionName=name)
        lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
        lam.update_function_code(FunctionName=name, ZipFile=make_zip(code("v2")))
        lam.get_waiter("function_updated_v2").wait(FunctionName=name)
        response = lam.invoke(FunctionName=name, Qualifier="live", InvocationType="Event")
        assert response["StatusCode"] == 202
        logs = server.client("logs")
        assert wait_for(lambda: bool(logged(logs, name, "START RequestId")))
        [start] = logged(logs, name, "START RequestId")
        assert start.endswith("Version: 1")
        lam.delete_function(FunctionName=name)


def test_versions_aliases_and_reservations_survive_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_server(data_dir)
    try:
        lam = first.client()
        name = create_function(lam, code("v1"))
        lam.publish_version(FunctionName=name)
        lam.update_function_code(FunctionName=name, ZipFile=make_zip(code("v2")))
        lam.get_waiter("function_updated_v2").wait(FunctionName=name)
        lam.publish_version(FunctionName=name)
        lam.update_function_code(FunctionName=name, ZipFile=make_zip(code("v3")))
        lam.get_waiter("function_updated_v2").wait(FunctionName=name)
        lam.publish_version(FunctionName=name)
        lam.delete_function(FunctionName=name, Qualifier="3")
        alias = lam.create_alias(
            FunctionName=name,
            Name="live",
            FunctionVersion="1",
            RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}},
        )
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=7)
    finally:
        first.stop()
    second = start_server(data_dir)
    try:
        lam = second.client()
        assert versions_of(lam, name) == ["$LATEST", "1", "2"]
        again = lam.get_alias(FunctionName=name, Name="live")
        again.pop("ResponseMetadata")
        alias.pop("ResponseMetadata")
        assert again == alias
        assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 7
        settings = lam.get_account_settings()["AccountLimit"]
        assert settings["UnreservedConcurrentExecutions"] == 993
        assert invoke(lam, FunctionName=name, Qualifier="2")[1]["code"] == "v2"
        assert invoke(lam, FunctionName=name)[1]["code"] == "v3"
        # The counter survived too: 3 was deleted, the next version is 4.
        lam.update_function_configuration(FunctionName=name, Description="four")
        lam.get_waiter("function_updated_v2").wait(FunctionName=name)
        assert lam.publish_version(FunctionName=name)["Version"] == "4"
    finally:
        second.stop()


# -- helpers ------------------------------------------------------------------------------------


def urlopen(url: str) -> Any:
    import urllib.request

    return urllib.request.urlopen(url, timeout=30)
