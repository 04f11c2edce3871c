"""SnapStart's API surface through boto3, against a real `lambdad serve`: settings, refusals and
the SnapStart member of FunctionConfiguration.

Only what holds whether or not the server can take snapshots is asserted here (a published
version's snapshot may still be running, be done or have failed when it is read back).
Recorded from real AWS: /work/shared/aws-recordings/lambda/test_lambda_api.snapshot.json
(TestLambdaSnapStart).
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ROLE, create_function, make_zip, unique_name

ECHO = {"app.py": "def handler(event, context):\n    return event\n"}
ON = {"ApplyOn": "PublishedVersions"}
BAD_APPLY_ON = (
    "1 validation error detected: Value 'invalidOption' at 'snapStart.applyOn' failed to satisfy "
    "constraint: Member must satisfy enum value set: [PublishedVersions, None]"
)


def function(name: str, runtime: str, **extra: Any) -> dict[str, Any]:
    """CreateFunction's parameters for an echo function."""
    return dict(
        FunctionName=name,
        Runtime=runtime,
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": make_zip(ECHO)},
        **extra,
    )


def refusal(call: Any, **kwargs: Any) -> tuple[str, int, str, Any]:
    """(code, HTTP status, message, the body's Type) of a call that must fail."""
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    response: dict[str, Any] = info.value.response
    return (
        response["Error"]["Code"],
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Message"],
        response.get("Type"),
    )


def test_an_unknown_apply_on_is_a_validation_error(lam: Any) -> None:
    bad = {"ApplyOn": "invalidOption"}
    refused = refusal(
        lam.create_function, **function(unique_name("snap"), "python3.12", SnapStart=bad)
    )
    assert refused[:3] == ("ValidationException", 400, BAD_APPLY_ON)
    name = create_function(lam, ECHO, runtime="python3.12")
    refused = refusal(lam.update_function_configuration, FunctionName=name, SnapStart=bad)
    assert refused[:3] == ("ValidationException", 400, BAD_APPLY_ON)


def test_a_runtime_without_snap_start_is_refused(lam: Any) -> None:
    name = unique_name("snap")
    refused = refusal(lam.create_function, **function(name, "python3.11", SnapStart=ON))
    unsupported = "python3.11 is not supported for SnapStart enabled functions."
    assert refused == ("InvalidParameterValueException", 400, unsupported, "User")
    assert refusal(lam.get_function, FunctionName=name)[0] == "ResourceNotFoundException"

    create_function(lam, ECHO, runtime="python3.11", name=name)
    refused = refusal(lam.update_function_configuration, FunctionName=name, SnapStart=ON)
    assert refused == ("InvalidParameterValueException", 400, unsupported, "User")
    assert lam.get_function_configuration(FunctionName=name)["SnapStart"]["ApplyOn"] == "None"

    updated = lam.update_function_configuration(
        FunctionName=name, Runtime="python3.12", SnapStart=ON
    )
    assert updated["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "Off"}
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    refused = refusal(lam.update_function_configuration, FunctionName=name, Runtime="python3.11")
    assert refused == ("InvalidParameterValueException", 400, unsupported, "User")
    assert lam.get_function_configuration(FunctionName=name)["Runtime"] == "python3.12"


def test_more_than_512_mb_of_tmp_is_refused(lam: Any) -> None:
    name = unique_name("snap")
    big = {"Size": 1024}
    refused = refusal(
        lam.create_function, **function(name, "python3.12", SnapStart=ON, EphemeralStorage=big)
    )
    too_big = (
        "EphemeralStorage size greater than 512 MB is not supported for SnapStart enabled "
        "functions."
    )
    assert refused == ("InvalidParameterValueException", 400, too_big, "User")
    assert refusal(lam.get_function, FunctionName=name)[0] == "ResourceNotFoundException"

    lam.create_function(
        **function(name, "python3.12", SnapStart=ON, EphemeralStorage={"Size": 512})
    )
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    refused = refusal(lam.update_function_configuration, FunctionName=name, EphemeralStorage=big)
    assert refused == ("InvalidParameterValueException", 400, too_big, "User")
    assert lam.get_function_configuration(FunctionName=name)["EphemeralStorage"] == {"Size": 512}
    # Without SnapStart the same size is taken.
    lam.update_function_configuration(FunctionName=name, SnapStart={"ApplyOn": "None"})
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    updated = lam.update_function_configuration(FunctionName=name, EphemeralStorage=big)
    assert updated["EphemeralStorage"] == big
    lam.delete_function(FunctionName=name)


def test_provisioned_concurrency_is_refused_on_snap_start_versions(lam: Any) -> None:
    name = unique_name("snap")
    lam.create_function(**function(name, "python3.12", SnapStart=ON))
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lam.update_function_configuration(FunctionName=name, SnapStart={"ApplyOn": "None"})
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert lam.publish_version(FunctionName=name)["Version"] == "2"
    lam.create_alias(
        FunctionName=name,
        Name="split",
        FunctionVersion="2",
        RoutingConfig={"AdditionalVersionWeights": {"1": 0.1}},
    )
    message = "Provisioned Concurrency Configs cannot be applied to SnapStart enabled functions."
    for qualifier in ("1", "live", "split"):
        refused = refusal(
            lam.put_provisioned_concurrency_config,
            FunctionName=name,
            Qualifier=qualifier,
            ProvisionedConcurrentExecutions=1,
        )
        assert refused[:3] == ("InvalidParameterValueException", 400, message), qualifier
    assert (
        lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"]
        == []
    )
    # Version 2 has no SnapStart: it takes provisioned concurrency.
    put = lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="2", ProvisionedConcurrentExecutions=1
    )
    assert put["RequestedProvisionedConcurrentExecutions"] == 1
    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="2")
    for alias in ("live", "split"):
        lam.delete_alias(FunctionName=name, Name=alias)
    lam.delete_function(FunctionName=name)


def test_an_alias_with_provisioned_concurrency_cannot_move_onto_snap_start(lam: Any) -> None:
    name = unique_name("snap")
    lam.create_function(**function(name, "python3.12"))
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    assert lam.publish_version(FunctionName=name)["Version"] == "1"
    lam.update_function_configuration(FunctionName=name, SnapStart=ON)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert lam.publish_version(FunctionName=name)["Version"] == "2"
    alias = lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=1
    )
    message = "Provisioned Concurrency Configs cannot be applied to SnapStart enabled functions."
    for change in (
        {"FunctionVersion": "2"},
        {"RoutingConfig": {"AdditionalVersionWeights": {"2": 0.5}}},
    ):
        refused = refusal(lam.update_alias, FunctionName=name, Name="live", **change)
        assert refused[:3] == ("InvalidParameterValueException", 400, message), change
    # Nothing changed: same version, no routing, same revision.
    after = lam.get_alias(FunctionName=name, Name="live")
    assert (after["FunctionVersion"], after.get("RoutingConfig"), after["RevisionId"]) == (
        "1",
        None,
        alias["RevisionId"],
    )
    # An alias without provisioned concurrency moves freely.
    lam.create_alias(FunctionName=name, Name="free", FunctionVersion="1")
    assert (
        lam.update_alias(FunctionName=name, Name="free", FunctionVersion="2")["FunctionVersion"]
        == "2"
    )
    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
    for name_ in ("live", "free"):
        lam.delete_alias(FunctionName=name, Name=name_)
    lam.delete_function(FunctionName=name)


def test_published_versions_report_snap_start_on(lam: Any) -> None:
    name = unique_name("snap")
    created = lam.create_function(**function(name, "python3.12", SnapStart=ON))
    assert created["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "Off"}
    lam.get_waiter("function_active_v2").wait(FunctionName=name)

    published = lam.publish_version(FunctionName=name)
    assert published["Version"] == "1"
    assert published["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "On"}
    assert (published["State"], published["StateReason"], published["StateReasonCode"]) == (
        "Pending",
        "The function is being created.",
        "Creating",
    )

    latest = lam.get_function(FunctionName=name)["Configuration"]
    assert latest["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "Off"}
    assert latest["State"] == "Active"
    version = lam.get_function_configuration(FunctionName=name, Qualifier="1")
    assert version["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "On"}
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    through_alias = lam.get_function_configuration(FunctionName=name, Qualifier="live")
    assert through_alias["SnapStart"]["OptimizationStatus"] == "On"
    listed = lam.list_versions_by_function(FunctionName=name)["Versions"]
    assert [(v["Version"], v["SnapStart"]["OptimizationStatus"]) for v in listed] == [
        ("$LATEST", "Off"),
        ("1", "On"),
    ]
    lam.delete_alias(FunctionName=name, Name="live")
    lam.delete_function(FunctionName=name)


def test_functions_without_snap_start_say_off(lam: Any) -> None:
    name = create_function(lam, ECHO, runtime="python3.12")
    published = lam.publish_version(FunctionName=name)
    assert published["SnapStart"] == {"ApplyOn": "None", "OptimizationStatus": "Off"}
    assert published["State"] == "Active"
