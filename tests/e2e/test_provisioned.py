"""Provisioned concurrency through boto3, against a real `lambdad serve`.

Shapes, codes and messages are AWS's, as recorded from real AWS in
/work/shared/aws-recordings/lambda/test_lambda_api.snapshot.json and test_lambda.snapshot.json.
Functions run sandboxed and cannot write host files: what happened inside an environment is
observed through the function's answers (its module-level code records the initialization type,
a per-environment id and when it ran) and through the Tail log's REPORT line.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
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
    module_server,
    settle,
    start_server,
    wait_for,
)

ACCOUNT = "000000000000"
INVALID = "InvalidParameterValueException"
CONFLICT = "ResourceConflictException"
NOT_FOUND = "ResourceNotFoundException"
CONFIG_NOT_FOUND = "ProvisionedConcurrencyConfigNotFoundException"
RESERVED = "ReservedFunctionConcurrentInvocationLimitExceeded"
UNPUBLISHED = "Provisioned Concurrency Configs cannot be applied to unpublished function versions."
NOT_A_VERSION_OR_ALIAS = "The function resource provided must be an alias or a published version."
NO_CONFIG = "No Provisioned Concurrency Config found for this function"
ABOVE_RESERVATION = (
    "Requested Provisioned Concurrency should not be greater than the "
    "reservedConcurrentExecution for function"
)
PROVISIONED = "provisioned-concurrency"
ON_DEMAND = "on-demand"

# Module-level code runs once per environment, at init: it records how and when.
PROBE = {
    "app.py": (
        "import os\n"
        "import time\n"
        "import uuid\n\n"
        "INIT_TYPE = os.environ['AWS_LAMBDA_INITIALIZATION_TYPE']\n"
        "ENVIRONMENT = uuid.uuid4().hex\n"
        "INIT_AT = time.time()\n\n"
        "def handler(event, context):\n"
        "    time.sleep(event.get('sleep', 0))\n"
        "    return {'init': INIT_TYPE, 'env': ENVIRONMENT, 'init_at': INIT_AT,\n"
        "            'version': context.function_version}\n"
    )
}
# Says which kind of environment ran each event it gets.
TELLER = {
    "app.py": (
        "import os\n\n"
        "INIT_TYPE = os.environ['AWS_LAMBDA_INITIALIZATION_TYPE']\n\n"
        "def handler(event, context):\n"
        "    print(f\"ran {event['token']} {INIT_TYPE}\")\n"
        "    return None\n"
    )
}
BROKEN = {
    "app.py": "raise RuntimeError('cannot start')\n\ndef handler(event, context):\n    return 1\n"
}


def arn(name: str, qualifier: str | None = None) -> str:
    base = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{name}"
    return f"{base}:{qualifier}" if qualifier else base


def failure(call: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
    """The error response of a call that must fail."""
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    response: dict[str, Any] = info.value.response
    return response


def error(response: dict[str, Any]) -> tuple[int, str, str]:
    return (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Code"],
        response["Error"]["Message"],
    )


def wait_status(lam: Any, name: str, qualifier: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll GetProvisionedConcurrencyConfig until the allocation is no longer IN_PROGRESS."""
    return settle(
        lambda: lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier),
        lambda config: config["Status"] != "IN_PROGRESS",
        timeout,
        interval=0.1,
    )


def call(lam: Any, name: str, qualifier: str | None = None, sleep: float = 0) -> dict[str, Any]:
    """Invoke with the Tail log; the function's answer plus `report` (its REPORT line) and
    `sent` (when the request left)."""
    kwargs = {"Qualifier": qualifier} if qualifier else {}
    sent = time.time()
    response = lam.invoke(
        FunctionName=name, Payload=json.dumps({"sleep": sleep}), LogType="Tail", **kwargs
    )
    assert response["StatusCode"] == 200 and "FunctionError" not in response, response
    answer: dict[str, Any] = json.loads(response["Payload"].read())
    log = base64.b64decode(response["LogResult"]).decode()
    answer["report"] = next(line for line in log.splitlines() if line.startswith("REPORT "))
    answer["sent"] = sent
    return answer


def together(lam: Any, name: str, qualifier: str, count: int, sleep: float) -> list[dict[str, Any]]:
    """`count` invocations started at the same moment."""
    barrier = threading.Barrier(count)

    def run(_: int) -> dict[str, Any]:
        barrier.wait()
        return call(lam, name, qualifier, sleep)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def provisioned_environments(lam: Any, name: str, qualifier: str, count: int) -> set[str]:
    """The ids of the `count` pre-initialised environments, found by parallel invocations."""
    answers = together(lam, name, qualifier, count, sleep=1.0)
    assert all(a["init"] == PROVISIONED for a in answers), answers
    assert all("Init Duration" not in a["report"] for a in answers), answers
    # Init ran before any of these requests was sent: nothing started on the request path.
    assert all(a["init_at"] < a["sent"] for a in answers), answers
    found = {a["env"] for a in answers}
    assert len(found) == count
    return found


@pytest.fixture
def published(lam: Any) -> Iterator[str]:
    """A probe function with version 1 and alias `live` -> 1."""
    name = create_function(lam, PROBE, Timeout=30)
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    yield name
    lam.delete_function(FunctionName=name)


class TestApi:
    def test_lifecycle_on_version_and_alias(self, lam: Any, published: str) -> None:
        name = published
        put = lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1
        )
        assert put["ResponseMetadata"]["HTTPStatusCode"] == 202
        assert put["RequestedProvisionedConcurrentExecutions"] == 1
        assert put["Status"] in ("IN_PROGRESS", "READY")
        assert "StatusReason" not in put
        assert put["LastModified"].endswith("+0000")
        # One configuration per version, directly or through an alias (recorded).
        response = failure(
            lam.put_provisioned_concurrency_config,
            FunctionName=name,
            Qualifier="live",
            ProvisionedConcurrentExecutions=1,
        )
        assert error(response) == (
            409,
            CONFLICT,
            "Alias can't be used for Provisioned Concurrency configuration on an already "
            "Provisioned version",
        )
        assert response["Type"] == "User"
        ready = wait_status(lam, name, "1")
        assert (ready["Status"], ready["AvailableProvisionedConcurrentExecutions"]) == ("READY", 1)
        assert ready["AllocatedProvisionedConcurrentExecutions"] == 1
        listed = lam.list_provisioned_concurrency_configs(FunctionName=name)
        assert [c["FunctionArn"] for c in listed["ProvisionedConcurrencyConfigs"]] == [
            arn(name, "1")
        ]
        deleted = lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
        assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
        response = failure(lam.get_provisioned_concurrency_config, FunctionName=name, Qualifier="1")
        assert error(response) == (404, CONFIG_NOT_FOUND, NO_CONFIG)
        assert (response["Type"], response["message"]) == ("User", NO_CONFIG)
        # Deleting what is not there is no error (recorded: 204).
        again = lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
        assert again["ResponseMetadata"]["HTTPStatusCode"] == 204

        lam.put_provisioned_concurrency_config(
            FunctionName=arn(name, "live"), Qualifier="live", ProvisionedConcurrentExecutions=1
        )
        response = failure(
            lam.put_provisioned_concurrency_config,
            FunctionName=name,
            Qualifier="1",
            ProvisionedConcurrentExecutions=1,
        )
        assert error(response) == (
            409,
            CONFLICT,
            "Version is pointed by a Provisioned Concurrency alias",
        )
        assert wait_status(lam, name, "live")["Status"] == "READY"
        # A deleted alias takes its configuration with it.
        lam.delete_alias(FunctionName=name, Name="live")
        response = failure(
            lam.get_provisioned_concurrency_config, FunctionName=name, Qualifier="live"
        )
        assert error(response) == (404, NOT_FOUND, f"Cannot find alias arn: {arn(name, 'live')}")
        listed = lam.list_provisioned_concurrency_configs(FunctionName=name)
        assert listed["ProvisionedConcurrencyConfigs"] == []

    def test_latest_and_unknown_targets_are_refused(self, server: Server, published: str) -> None:
        lam = server.client()
        name = published
        response = failure(
            lam.put_provisioned_concurrency_config,
            FunctionName=name,
            Qualifier="$LATEST",
            ProvisionedConcurrentExecutions=1,
        )
        assert error(response) == (400, INVALID, UNPUBLISHED)
        assert (response["Type"], response["message"]) == ("User", UNPUBLISHED)
        for operation in (
            lam.get_provisioned_concurrency_config,
            lam.delete_provisioned_concurrency_config,
        ):
            response = failure(operation, FunctionName=name, Qualifier="$LATEST")
            assert error(response) == (400, INVALID, NOT_A_VERSION_OR_ALIAS)
        response = failure(lam.get_provisioned_concurrency_config, FunctionName=name, Qualifier="1")
        assert error(response) == (404, CONFIG_NOT_FOUND, NO_CONFIG)
        cases = [
            (name, "10", f"Function not found: {arn(name, '10')}"),
            (name, "noalias", f"Cannot find alias arn: {arn(name, 'noalias')}"),
            ("doesnotexist", "1", f"Function not found: {arn('doesnotexist', '1')}"),
            ("doesnotexist", "noalias", f"Cannot find alias arn: {arn('doesnotexist', 'noalias')}"),
        ]
        for function, qualifier, message in cases:
            for operation, extra in (
                (lam.get_provisioned_concurrency_config, {}),
                (lam.delete_provisioned_concurrency_config, {}),
                (lam.put_provisioned_concurrency_config, {"ProvisionedConcurrentExecutions": 1}),
            ):
                response = failure(operation, FunctionName=function, Qualifier=qualifier, **extra)
                assert error(response) == (404, NOT_FOUND, message), (operation, qualifier)
        response = failure(lam.list_provisioned_concurrency_configs, FunctionName="doesnotexist")
        assert error(response) == (404, NOT_FOUND, f"Function not found: {arn('doesnotexist')}")
        assert (
            lam.list_provisioned_concurrency_configs(FunctionName=name)[
                "ProvisionedConcurrencyConfigs"
            ]
            == []
        )
        loose = server.client(parameter_validation=False)
        response = failure(
            loose.put_provisioned_concurrency_config,
            FunctionName=name,
            Qualifier="1",
            ProvisionedConcurrentExecutions=0,
        )
        assert response["Error"] == {
            "Code": "ValidationException",
            "Message": "1 validation error detected: Value '0' at "
            "'provisionedConcurrentExecutions' failed to satisfy constraint: Member must have "
            "value greater than or equal to 1",
        }
        response = failure(
            loose.get_provisioned_concurrency_config, FunctionName=name, Qualifier="bad.qualifier"
        )
        assert response["Error"] == {
            "Code": "ValidationException",
            "Message": "1 validation error detected: Value 'bad.qualifier' at 'qualifier' failed "
            "to satisfy constraint: Member must satisfy regular expression pattern: "
            "(|[a-zA-Z0-9$_-]+)",
        }

    def test_list_paginates(self, lam: Any, published: str) -> None:
        name = published
        for _ in range(2):
            lam.update_function_configuration(FunctionName=name, Description=f"d{time.time()}")
            lam.get_waiter("function_updated_v2").wait(FunctionName=name)
            lam.publish_version(FunctionName=name)
        for qualifier in ("1", "2", "3"):
            lam.put_provisioned_concurrency_config(
                FunctionName=name, Qualifier=qualifier, ProvisionedConcurrentExecutions=1
            )
        first = lam.list_provisioned_concurrency_configs(FunctionName=name, MaxItems=2)
        assert [c["FunctionArn"] for c in first["ProvisionedConcurrencyConfigs"]] == [
            arn(name, "1"),
            arn(name, "2"),
        ]
        rest = lam.list_provisioned_concurrency_configs(
            FunctionName=name, Marker=first["NextMarker"]
        )
        assert [c["FunctionArn"] for c in rest["ProvisionedConcurrencyConfigs"]] == [arn(name, "3")]
        assert "NextMarker" not in rest
        item = rest["ProvisionedConcurrencyConfigs"][0]
        assert set(item) >= {
            "FunctionArn",
            "RequestedProvisionedConcurrentExecutions",
            "AvailableProvisionedConcurrentExecutions",
            "AllocatedProvisionedConcurrentExecutions",
            "Status",
            "LastModified",
        }
        paginated = lam.get_paginator("list_provisioned_concurrency_configs").paginate(
            FunctionName=name, PaginationConfig={"PageSize": 1}
        )
        assert sum(len(p["ProvisionedConcurrencyConfigs"]) for p in paginated) == 3
        # A deleted version takes its configuration with it.
        lam.delete_function(FunctionName=name, Qualifier="2")
        listed = lam.list_provisioned_concurrency_configs(FunctionName=name)
        assert [c["FunctionArn"] for c in listed["ProvisionedConcurrencyConfigs"]] == [
            arn(name, "1"),
            arn(name, "3"),
        ]

    def test_reservation_bounds_provisioned_concurrency(self, lam: Any, published: str) -> None:
        name = published
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
        response = failure(
            lam.put_provisioned_concurrency_config,
            FunctionName=name,
            Qualifier="1",
            ProvisionedConcurrentExecutions=2,
        )
        assert error(response) == (400, INVALID, ABOVE_RESERVATION)
        assert response["Type"] == "User"
        lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1
        )
        # The provisioned environment holds the whole reservation: $LATEST is throttled at once.
        response = failure(lam.invoke, FunctionName=name)
        assert (response["Error"]["Code"], response["Reason"]) == (
            "TooManyRequestsException",
            RESERVED,
        )
        response = failure(
            lam.put_function_concurrency, FunctionName=name, ReservedConcurrentExecutions=0
        )
        message = (
            " ReservedConcurrentExecutions  0 should not be lower than function's total "
            "provisioned concurrency [1]."
        )
        assert error(response) == (400, INVALID, message)
        assert "Type" not in response  # as AWS sends it (recorded)
        assert wait_status(lam, name, "1")["Status"] == "READY"
        # The version runs on its provisioned environment; the alias names the same version.
        assert call(lam, name, "live")["init"] == PROVISIONED
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)
        assert call(lam, name)["init"] == ON_DEMAND

    def test_account_settings_count_provisioned_concurrency(self, lam: Any, published: str) -> None:
        name = published

        def unreserved() -> int:
            value: int = lam.get_account_settings()["AccountLimit"][
                "UnreservedConcurrentExecutions"
            ]
            return value

        before = unreserved()
        lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=3
        )
        assert unreserved() == before - 3
        # Within a reservation, provisioned concurrency takes nothing more from the account.
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=5)
        assert unreserved() == before - 5
        lam.delete_function_concurrency(FunctionName=name)
        assert unreserved() == before - 3
        lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
        assert unreserved() == before


class TestEnvironments:
    def test_invocations_run_on_preinitialised_environments(self, lam: Any, published: str) -> None:
        name = published
        lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=2
        )
        ready = wait_status(lam, name, "live")
        assert (ready["Status"], ready["AvailableProvisionedConcurrentExecutions"]) == ("READY", 2)
        environments = provisioned_environments(lam, name, "live", 2)
        # The version itself runs on the same environments.
        assert call(lam, name, "1")["env"] in environments
        # Beyond the provisioned environments, traffic spills over to on-demand ones.
        answers = together(lam, name, "live", 3, sleep=1.5)
        provisioned = [a for a in answers if a["init"] == PROVISIONED]
        spilled = [a for a in answers if a["init"] == ON_DEMAND]
        assert (len(provisioned), len(spilled)) == (2, 1), answers
        assert {a["env"] for a in provisioned} == environments
        assert "Init Duration" in spilled[0]["report"]
        assert all("Init Duration" not in a["report"] for a in provisioned)
        assert spilled[0]["version"] == "1"

    def test_events_run_on_the_provisioned_environments(self, server: Server, lam: Any) -> None:
        """Event invocations of an alias run on its provisioned environments, as AWS's queue
        invokes them, even where those hold the function's whole reservation and no on-demand
        capacity is left (they used to wait for an on-demand lease for ever)."""
        name = create_function(lam, TELLER, Timeout=30)
        lam.publish_version(FunctionName=name)
        lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
        lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=1
        )
        assert wait_status(lam, name, "live")["Status"] == "READY"
        logs = server.client("logs")
        tokens = [uuid.uuid4().hex for _ in range(3)]
        for token in tokens:  # one environment: they run one after another
            response = lam.invoke(
                FunctionName=name,
                Qualifier="live",
                InvocationType="Event",
                Payload=json.dumps({"token": token}),
            )
            assert response["StatusCode"] == 202
        assert wait_for(lambda: all(logged(logs, name, t) for t in tokens), timeout=30)
        for token in tokens:
            assert logged(logs, name, token) == [f"ran {token} {PROVISIONED}"]
        # $LATEST has no provisioned environment and no capacity: its event waits.
        late = uuid.uuid4().hex
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"token": late}))
        time.sleep(1.5)
        assert logged(logs, name, late) == []
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)
        assert wait_for(lambda: logged(logs, name, late) == [f"ran {late} {ON_DEMAND}"])
        lam.delete_function(FunctionName=name)

    def test_delete_releases_the_environments(self, lam: Any, published: str) -> None:
        name = published
        lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1
        )
        assert wait_status(lam, name, "1")["Status"] == "READY"
        environments = provisioned_environments(lam, name, "1", 1)
        lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
        answer = call(lam, name, "1")
        assert answer["init"] == ON_DEMAND
        assert answer["env"] not in environments
        assert "Init Duration" in answer["report"]

    def test_alias_move_reprovisions_on_the_new_version(self, lam: Any, published: str) -> None:
        name = published
        lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=1
        )
        assert wait_status(lam, name, "live")["Status"] == "READY"
        old = provisioned_environments(lam, name, "live", 1)
        lam.update_function_configuration(FunctionName=name, Description="second")
        lam.get_waiter("function_updated_v2").wait(FunctionName=name)
        lam.publish_version(FunctionName=name)
        lam.update_alias(FunctionName=name, Name="live", FunctionVersion="2")
        assert wait_status(lam, name, "live")["Status"] == "READY"
        answer = call(lam, name, "live")
        assert (answer["init"], answer["version"]) == (PROVISIONED, "2")
        assert answer["env"] not in old
        # Version 1 lost its provisioned environment.
        assert call(lam, name, "1")["init"] == ON_DEMAND

    def test_failed_init_fails_the_configuration(self, server: Server, lam: Any) -> None:
        name = create_function(lam, BROKEN)
        try:
            lam.publish_version(FunctionName=name)
            put = lam.put_provisioned_concurrency_config(
                FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1
            )
            assert put["Status"] == "IN_PROGRESS"
            failed = wait_status(lam, name, "1")
            assert failed["Status"] == "FAILED"
            assert failed["StatusReason"] == "FUNCTION_ERROR_INIT_FAILURE"  # recorded
            assert failed["AvailableProvisionedConcurrentExecutions"] == 0
            assert failed["AllocatedProvisionedConcurrentExecutions"] == 0
            # The init error is in the function's log.
            logs = server.client("logs")
            events = logs.filter_log_events(
                logGroupName=f"/aws/lambda/{name}", filterPattern="INIT_REPORT"
            )["events"]
            assert any("Status: error" in e["message"] for e in events), events
        finally:
            lam.delete_function(FunctionName=name)


# Idle on-demand environments stop after 1 s; the account runs 20 at once, 5 unreserved.
short_keep_alive = module_server(
    "provisioned", "--keep-alive", "1", "--account-concurrency", "20", "--min-unreserved", "5"
)


def test_provisioned_environments_survive_the_keep_alive(short_keep_alive: Server) -> None:
    lam = short_keep_alive.client()
    name = create_function(lam, PROBE, Timeout=30)
    lam.publish_version(FunctionName=name)
    lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1
    )
    assert wait_status(lam, name, "1")["Status"] == "READY"
    environments = provisioned_environments(lam, name, "1", 1)
    on_demand = call(lam, name)["env"]
    time.sleep(3.5)  # the keep-alive is 1 s, the reaper looks every second
    assert call(lam, name)["env"] != on_demand, "the idle on-demand environment was kept"
    answer = call(lam, name, "1")
    assert answer["init"] == PROVISIONED and answer["env"] in environments
    lam.delete_function(FunctionName=name)


def test_provisioned_concurrency_keeps_the_unreserved_floor(short_keep_alive: Server) -> None:
    lam = short_keep_alive.client()
    name = create_function(lam, PROBE)
    lam.publish_version(FunctionName=name)
    response = failure(
        lam.put_provisioned_concurrency_config,
        FunctionName=name,
        Qualifier="1",
        ProvisionedConcurrentExecutions=21,
    )
    message = "Specified ConcurrentExecutions for function is greater than account's unreserved"
    assert error(response) == (400, INVALID, f"{message} concurrency [20].")
    assert "Type" not in response
    response = failure(
        lam.put_provisioned_concurrency_config,
        FunctionName=name,
        Qualifier="1",
        ProvisionedConcurrentExecutions=16,
    )
    assert error(response)[2] == (
        "Specified ConcurrentExecutions for function decreases account's "
        "UnreservedConcurrentExecution below its minimum value of [5]."
    )
    lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=15
    )
    assert lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 5
    # A reservation elsewhere must leave the floor too.
    other = create_function(lam, PROBE)
    response = failure(
        lam.put_function_concurrency, FunctionName=other, ReservedConcurrentExecutions=1
    )
    assert "below its minimum value of [5]" in response["message"]
    lam.delete_function(FunctionName=name)
    assert lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 20
    lam.delete_function(FunctionName=other)


def test_reprovisioned_after_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(data)
    try:
        lam = server.client()
        name = create_function(lam, PROBE, Timeout=30)
        lam.publish_version(FunctionName=name)
        lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
        lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=2
        )
        assert wait_status(lam, name, "live")["Status"] == "READY"
        before = provisioned_environments(lam, name, "live", 2)
    finally:
        server.stop()
    server = start_server(data)
    try:
        lam = server.client()
        ready = wait_status(lam, name, "live")
        assert (ready["Status"], ready["AvailableProvisionedConcurrentExecutions"]) == ("READY", 2)
        after = provisioned_environments(lam, name, "live", 2)
        assert not after & before  # new environments, initialised again after the restart
    finally:
        server.stop()
