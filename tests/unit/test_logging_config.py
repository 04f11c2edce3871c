"""LoggingConfig in the control plane: defaults, merging, refusals, versions and restarts."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import orjson
import pytest

from lambdad.api.shapes import logging_config
from lambdad.control import versions
from lambdad.control.functions import FunctionSettings
from lambdad.control.logging_config import LEVELS_NEED_JSON, LoggingUpdate, logging_fields
from lambdad.control.model import FunctionConfig
from lambdad.errors import InvalidParameterValueException
from lambdad.store.metadata import SqliteMetadataStore
from tests.unit.test_versions import ACCOUNT, SETTINGS, package, ref, registry

JSON = LoggingUpdate(log_format="JSON")
TEXT = LoggingUpdate(log_format="Text")


def config(**changes: object) -> FunctionConfig:
    base = FunctionConfig(ACCOUNT, "us-east-1", "fn", "python3.12", "app.h", "r", "k", "s", 1)
    return base.evolve(**changes)


def shown(update: LoggingUpdate, current: FunctionConfig | None = None) -> dict[str, str]:
    fields = logging_fields(current, update, "fn")
    return logging_config((current or config()).evolve(**fields))


def test_defaults_are_text_in_the_function_group() -> None:
    assert shown(LoggingUpdate()) == {"LogFormat": "Text", "LogGroup": "/aws/lambda/fn"}


def test_json_gets_info_levels_unless_given() -> None:
    assert shown(JSON) == {
        "LogFormat": "JSON",
        "LogGroup": "/aws/lambda/fn",
        "ApplicationLogLevel": "INFO",
        "SystemLogLevel": "INFO",
    }
    given = LoggingUpdate("JSON", "DEBUG", "WARN", "cool_lambda")
    assert shown(given) == {
        "LogFormat": "JSON",
        "LogGroup": "cool_lambda",
        "ApplicationLogLevel": "DEBUG",
        "SystemLogLevel": "WARN",
    }


def test_updates_merge_with_what_is_stored() -> None:
    stored = config(**logging_fields(None, LoggingUpdate("JSON", "ERROR", "DEBUG", "g"), "fn"))
    assert shown(LoggingUpdate(application_log_level="TRACE"), stored) == {
        "LogFormat": "JSON",
        "LogGroup": "g",
        "ApplicationLogLevel": "TRACE",
        "SystemLogLevel": "DEBUG",
    }
    assert shown(TEXT, stored) == {"LogFormat": "Text", "LogGroup": "g"}  # levels dropped
    assert shown(LoggingUpdate(log_group="/aws/lambda/fn"), stored)["LogGroup"] == "/aws/lambda/fn"


def test_switching_text_to_json_starts_from_the_defaults() -> None:
    stored = config(**logging_fields(None, LoggingUpdate(log_group="g"), "fn"))
    assert shown(JSON, stored) == {
        "LogFormat": "JSON",
        "LogGroup": "g",
        "ApplicationLogLevel": "INFO",
        "SystemLogLevel": "INFO",
    }


@pytest.mark.parametrize(
    "update",
    [
        LoggingUpdate("Text", application_log_level="INFO"),
        LoggingUpdate("Text", system_log_level="WARN"),
        LoggingUpdate(application_log_level="DEBUG"),  # the stored (or default) format is Text
    ],
)
def test_levels_with_text_are_refused(update: LoggingUpdate) -> None:
    with pytest.raises(InvalidParameterValueException) as info:
        logging_fields(config(), update, "fn")
    assert info.value.message == LEVELS_NEED_JSON
    assert info.value.message.startswith(
        'LogLevel is not supported when LogFormat is set to "Text"'
    )


async def test_registry_stores_merges_and_publishes_it(tmp_path: Path) -> None:
    store = SqliteMetadataStore(tmp_path / "m.sqlite3")
    reg = registry(tmp_path, store)
    created = await reg.create(
        ACCOUNT, "fn", dataclasses.replace(SETTINGS, logging=JSON), package("a"), {}
    )
    assert (created.log_format, created.application_log_level) == ("JSON", "INFO")
    partial = FunctionSettings(logging=LoggingUpdate(system_log_level="DEBUG", log_group="g"))
    await reg.update_configuration(ACCOUNT, ref("fn"), partial, None)
    published = await reg.publish(ACCOUNT, ref("fn"))
    store.close()
    again = registry(tmp_path, SqliteMetadataStore(tmp_path / "m.sqlite3"))
    for version in (None, published.version):
        found = again.get(ACCOUNT, ref("fn", version))
        assert logging_config(found) == {
            "LogFormat": "JSON",
            "LogGroup": "g",
            "ApplicationLogLevel": "INFO",
            "SystemLogLevel": "DEBUG",
        }
        assert found.log_group == "g"


async def test_a_refused_update_changes_nothing(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    await reg.create(ACCOUNT, "fn", SETTINGS, package("a"), {})
    before = reg.get(ACCOUNT, ref("fn"))
    bad = FunctionSettings(timeout=9, logging=LoggingUpdate(application_log_level="WARN"))
    with pytest.raises(InvalidParameterValueException, match="LogLevel is not supported"):
        await reg.update_configuration(ACCOUNT, ref("fn"), bad, None)
    assert reg.get(ACCOUNT, ref("fn")) == before
    with pytest.raises(InvalidParameterValueException, match="LogLevel is not supported"):
        await reg.create(
            ACCOUNT, "other", dataclasses.replace(SETTINGS, logging=bad.logging), package("b"), {}
        )
    assert reg.lookup(ACCOUNT, "other") is None


def test_records_from_before_keep_their_fingerprint() -> None:
    """A record stored before the levels and group existed loads as Text in the default group,
    and publishing an unchanged $LATEST still answers the version published from it."""
    current = config()
    old_record = {
        k: v
        for k, v in orjson.loads(orjson.dumps(current.to_record())).items()
        if k not in ("application_log_level", "system_log_level", "custom_log_group")
    }
    loaded = FunctionConfig.from_record(old_record)
    assert loaded == current and loaded.log_group == "/aws/lambda/fn"
    # the fingerprint as it was computed before: every content field, these three unknown
    content = {k: v for k, v in old_record.items() if k not in versions._NOT_CONTENT}
    before = hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()
    assert versions.digest(loaded) == before
