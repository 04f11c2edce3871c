"""Tests for model-driven input validation and AWS's exact error wording."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.model import ShapeResolver

from lambdad.api.protocol import LambdaProtocol, service_model
from lambdad.api.validation import InputValidator, format_errors, lower_camel, render_value
from lambdad.errors import InvalidParameterValueException, ValidationException

ROLE = "arn:aws:iam::123456789012:role/lambda-role"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:my-function"
BASE = {"FunctionName": "f", "Role": ROLE, "Code": {"ZipFile": b"zip"}}


@pytest.fixture(scope="module")
def proto() -> LambdaProtocol:
    return LambdaProtocol()


def _message(validator: InputValidator, params: dict[str, Any]) -> str:
    with pytest.raises(ValidationException) as info:
        validator.validate(params)
    assert info.value.status == 400
    assert info.value.code == "ValidationException"
    return info.value.message


def _validator(operation: str) -> InputValidator:
    return InputValidator(service_model().operation_model(operation).input_shape)


# ------------------------------------------------------------- recorded AWS messages


def test_role_pattern_recorded() -> None:
    message = _message(_validator("CreateFunction"), {**BASE, "Role": "r1"})
    assert message == (
        "1 validation error detected: Value 'r1' at 'role' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: "
        r"arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+"
    )


def test_list_max_length_recorded() -> None:
    message = _message(_validator("CreateFunction"), {**BASE, "Architectures": ["x86_64", "arm64"]})
    assert message == (
        "1 validation error detected: Value '[x86_64, arm64]' at 'architectures' failed to "
        "satisfy constraint: Member must have length less than or equal to 1"
    )


def test_list_min_length() -> None:
    message = _message(_validator("CreateFunction"), {**BASE, "Architectures": []})
    assert message == (
        "1 validation error detected: Value '[]' at 'architectures' failed to satisfy "
        "constraint: Member must have length greater than or equal to 1"
    )


def test_integer_min_recorded() -> None:
    params = {"FunctionName": "f", "Qualifier": "live", "ProvisionedConcurrentExecutions": 0}
    message = _message(_validator("PutProvisionedConcurrencyConfig"), params)
    assert message == (
        "1 validation error detected: Value '0' at 'provisionedConcurrentExecutions' failed to "
        "satisfy constraint: Member must have value greater than or equal to 1"
    )


def test_required_recorded() -> None:
    message = _message(_validator("UntagResource"), {"Resource": FUNCTION_ARN})
    assert message == (
        "1 validation error detected: Value null at 'tagKeys' failed to satisfy constraint: "
        "Member must not be null"
    )


# ------------------------------------------------------------------- each message kind


def test_integer_max() -> None:
    message = _message(_validator("CreateFunction"), {**BASE, "MemorySize": 20000000})
    assert message == (
        "1 validation error detected: Value '20000000' at 'memorySize' failed to satisfy "
        "constraint: Member must have value less than or equal to 32768"
    )


def test_string_max_length() -> None:
    message = _message(_validator("CreateFunction"), {**BASE, "Description": "d" * 257})
    assert message == (
        f"1 validation error detected: Value '{'d' * 257}' at 'description' failed to satisfy "
        "constraint: Member must have length less than or equal to 256"
    )


def test_string_length_counts_utf16_units() -> None:
    # 128 astral characters are 256 UTF-16 code units: fine; one more is too long.
    assert _validator("CreateFunction").errors({**BASE, "Description": "😀" * 128}) == ([], None)
    errors, _ = _validator("CreateFunction").errors({**BASE, "Description": "😀" * 129})
    assert errors[0].endswith("Member must have length less than or equal to 256")


def test_string_min_length_and_pattern_together() -> None:
    message = _message(_validator("GetFunction"), {"FunctionName": ""})
    pattern = service_model().shape_for("NamespacedFunctionName").metadata["pattern"]
    assert message == (
        "2 validation errors detected: "
        "Value '' at 'functionName' failed to satisfy constraint: Member must satisfy regular "
        f"expression pattern: {pattern}; "
        "Value '' at 'functionName' failed to satisfy constraint: Member must have length "
        "greater than or equal to 1"
    )


def test_pattern_must_match_whole_string() -> None:
    validator = _validator("CreateFunction")
    assert validator.errors({**BASE, "Role": ROLE}) == ([], None)
    errors, _ = validator.errors({**BASE, "Role": ROLE + " trailing"})
    assert len(errors) == 1
    errors, _ = validator.errors({**BASE, "Role": "x" + ROLE})
    assert len(errors) == 1


def test_a_remembered_good_value_leaves_other_values_checked() -> None:
    validator = _validator("Invoke")
    for _ in range(2):  # the second time from memory
        assert validator.errors({"FunctionName": "my-fn"}) == ([], None)
    errors, _ = validator.errors({"FunctionName": "my fn"})
    assert len(errors) == 1 and "regular expression pattern" in errors[0]
    long_name = "f" * 300  # too long to remember, and still checked every time
    for _ in range(2):
        errors, _ = validator.errors({"FunctionName": long_name})
        assert any("length less than or equal to" in e for e in errors)


def test_top_level_enum() -> None:
    message = _message(_validator("CreateFunction"), {**BASE, "PackageType": "Zap"})
    assert message == (
        "1 validation error detected: Value 'Zap' at 'packageType' failed to satisfy "
        "constraint: Member must satisfy enum value set: [Zip, Image]"
    )


def test_nested_member_path() -> None:
    message = _message(_validator("CreateFunction"), {**BASE, "SnapStart": {"ApplyOn": "Always"}})
    assert message == (
        "1 validation error detected: Value 'Always' at 'snapStart.applyOn' failed to satisfy "
        "constraint: Member must satisfy enum value set: [PublishedVersions, None]"
    )


def test_list_element_enum() -> None:
    message = _message(_validator("CreateFunction"), {**BASE, "Architectures": ["X86_64"]})
    assert message == (
        "1 validation error detected: Value '[X86_64]' at 'architectures' failed to satisfy "
        "constraint: Member must satisfy constraint: [Member must satisfy enum value set: "
        "[x86_64, arm64], Member must not be null]"
    )


def test_list_element_string_constraints_listed_in_aws_order() -> None:
    message = _message(_validator("CreateFunction"), {**BASE, "Layers": ["", "b"]})
    pattern = service_model().shape_for("LayerVersionArn").metadata["pattern"]
    assert message == (
        "1 validation error detected: Value '[, b]' at 'layers' failed to satisfy constraint: "
        "Member must satisfy constraint: [Member must have length less than or equal to 140, "
        "Member must have length greater than or equal to 1, Member must satisfy regular "
        f"expression pattern: {pattern}, Member must not be null]"
    )


def test_list_null_element() -> None:
    message = _message(
        _validator("UntagResource"), {"Resource": FUNCTION_ARN, "TagKeys": ["a", None]}
    )
    assert message == (
        "1 validation error detected: Value '[a, null]' at 'tagKeys' failed to satisfy "
        "constraint: Member must satisfy constraint: [Member must not be null]"
    )


def test_list_of_structures_paths() -> None:
    params = {**BASE, "FileSystemConfigs": [{"Arn": "arn:x", "LocalMountPath": "/mnt/a"}, {}]}
    errors, _ = _validator("CreateFunction").errors(params)
    assert errors[0] == (
        "Value '[{Arn=arn:x, LocalMountPath=/mnt/a}, {}]' at 'fileSystemConfigs' failed to "
        "satisfy constraint: Member must have length less than or equal to 1"
    )
    assert errors[1].startswith("Value 'arn:x' at 'fileSystemConfigs.1.member.arn' failed")
    assert errors[2:] == [
        "Value null at 'fileSystemConfigs.2.member.arn' failed to satisfy constraint: "
        "Member must not be null",
        "Value null at 'fileSystemConfigs.2.member.localMountPath' failed to satisfy "
        "constraint: Member must not be null",
    ]


def test_sensitive_map_keys() -> None:
    params = {**BASE, "Environment": {"Variables": {"1BAD": "v", "GOOD": "secret"}}}
    message = _message(_validator("CreateFunction"), params)
    assert message == (
        "1 validation error detected: Value at 'environment.variables' failed to satisfy "
        "constraint: Map keys must satisfy constraint: [Member must satisfy regular expression "
        "pattern: [a-zA-Z]([a-zA-Z0-9_])+]"
    )
    assert "secret" not in message


def test_map_keys_and_values_rendered_as_java_map() -> None:
    validator = _validator("UpdateAlias")
    params = {"FunctionName": "f", "Name": "live", "RoutingConfig": {}}
    params["RoutingConfig"] = {"AdditionalVersionWeights": {"v2": 0.5}}
    message = _message(validator, params)
    assert message == (
        "1 validation error detected: Value '{v2=0.5}' at 'routingConfig.additionalVersionWeights'"
        " failed to satisfy constraint: Map keys must satisfy constraint: [Member must have "
        "length less than or equal to 1024, Member must have length greater than or equal to 1, "
        "Member must satisfy regular expression pattern: [0-9]+]"
    )
    params["RoutingConfig"] = {"AdditionalVersionWeights": {"2": 1.5}}
    message = _message(validator, params)
    assert message == (
        "1 validation error detected: Value '{2=1.5}' at 'routingConfig.additionalVersionWeights'"
        " failed to satisfy constraint: Map value must satisfy constraint: [Member must have "
        "value less than or equal to 1.0, Member must have value greater than or equal to 0.0, "
        "Member must not be null]"
    )


def test_several_errors_joined_in_model_order() -> None:
    params = {**BASE, "Role": "r1", "Timeout": 0, "FunctionName": None}
    message = _message(_validator("CreateFunction"), params)
    assert message.startswith("3 validation errors detected: Value null at 'functionName' ")
    parts = message.split("; ")
    assert len(parts) == 3
    assert parts[1].startswith("Value 'r1' at 'role' ")
    assert parts[2] == (
        "Value '0' at 'timeout' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1"
    )


def test_blob_contents_are_not_validated() -> None:
    params = {"LayerName": "l", "Content": {"ZipFile": b"x" * 10}}
    assert _validator("PublishLayerVersion").errors(params) == ([], None)
    assert _validator("Invoke").errors({"FunctionName": "f", "Payload": b"\x00" * 10}) == ([], None)


# ------------------------------------------------------------------------------ Runtime


def test_bad_runtime_is_invalid_parameter_value() -> None:
    with pytest.raises(InvalidParameterValueException) as info:
        _validator("CreateFunction").validate({**BASE, "Runtime": "python2.8"})
    enum = ", ".join(service_model().shape_for("Runtime").enum)
    assert info.value.message == (
        "Value python2.8 at 'runtime' failed to satisfy constraint: Member must satisfy enum "
        f"value set: [{enum}] or be a valid ARN"
    )
    assert info.value.status == 400
    with pytest.raises(InvalidParameterValueException):
        _validator("UpdateFunctionConfiguration").validate({"FunctionName": "f", "Runtime": "x"})


def test_bad_runtime_loses_to_other_validation_errors() -> None:
    message = _message(_validator("CreateFunction"), {**BASE, "Runtime": "nope", "Role": "r1"})
    assert message.startswith("1 validation error detected: Value 'r1' at 'role'")


def test_runtime_lists_elsewhere_are_plain_validation() -> None:
    params = {"LayerName": "l", "Content": {}, "CompatibleRuntimes": ["python9"]}
    message = _message(_validator("PublishLayerVersion"), params)
    assert "at 'compatibleRuntimes'" in message
    assert "Member must satisfy constraint: [Member must satisfy enum value set: [" in message


def test_runtime_via_parse(proto: LambdaProtocol) -> None:
    body = b'{"FunctionName": "f", "Role": "%s", "Code": {}, "Runtime": "cobol"}' % ROLE.encode()
    with pytest.raises(InvalidParameterValueException):
        proto.parse("CreateFunction", {}, {}, {}, body)
    with pytest.raises(ValidationException) as info:
        proto.parse("ListLayers", {}, {"CompatibleRuntime": ["cobol"]}, {}, b"")
    assert "at 'compatibleRuntime' failed" in info.value.message


# ------------------------------------------------------------------------------ helpers


@pytest.mark.parametrize(
    ("value", "sensitive", "expected"),
    [
        (None, False, "Value null"),
        (None, True, "Value null"),
        ("r1", False, "Value 'r1'"),
        ("r1", True, "Value"),
        (0, False, "Value '0'"),
        (True, False, "Value 'true'"),
        (0.5, False, "Value '0.5'"),
        (2.0, False, "Value '2.0'"),
        (1e-05, False, "Value '1.0E-5'"),
        (-2.5e-07, False, "Value '-2.5E-7'"),
        (12345678.0, False, "Value '1.2345678E7'"),
        (1e22, False, "Value '1.0E22'"),
        (["a", "b"], False, "Value '[a, b]'"),
        ([], False, "Value '[]'"),
        ({"k": "v", "n": 1}, False, "Value '{k=v, n=1}'"),
        ({"a": ["x", None]}, False, "Value '{a=[x, null]}'"),
    ],
)
def test_render_value(value: Any, sensitive: bool, expected: str) -> None:
    assert render_value(value, sensitive) == expected


def test_lower_camel() -> None:
    assert lower_camel("FunctionName") == "functionName"
    assert lower_camel("KMSKeyArn") == "kMSKeyArn"
    assert lower_camel("TagKeys") == "tagKeys"


def test_format_errors() -> None:
    assert format_errors(["a"]) == "1 validation error detected: a"
    assert format_errors(["a", "b"]) == "2 validation errors detected: a; b"


def _custom_shape(pattern: str) -> Any:
    resolver = ShapeResolver(
        {
            "Input": {
                "type": "structure",
                "required": ["Name"],
                "members": {"Name": {"shape": "Name"}, "Other": {"shape": "Other"}},
            },
            "Name": {"type": "string", "pattern": pattern},
            "Other": {"type": "string", "pattern": "[a-z]+", "max": 3},
        }
    )
    return resolver.get_shape_by_name("Input")


def test_uncompilable_pattern_is_skipped() -> None:
    # Java named groups "(?<n>...)" are not Python syntax: that check is skipped, others run.
    validator = InputValidator(_custom_shape("(?<first>[a-z]+)"))
    assert validator.errors({"Name": "ANYTHING GOES"}) == ([], None)
    errors, _ = validator.errors({"Name": "x", "Other": "ABCD"})
    assert errors == [
        "Value 'ABCD' at 'other' failed to satisfy constraint: Member must satisfy regular "
        "expression pattern: [a-z]+",
        "Value 'ABCD' at 'other' failed to satisfy constraint: Member must have length less "
        "than or equal to 3",
    ]


def test_input_without_shape_accepts_anything() -> None:
    assert InputValidator(None).errors({"x": 1}) == ([], None)


def test_every_model_pattern_compiles_or_is_skipped() -> None:
    # Building validators for every operation must not raise.
    model = service_model()
    for name in model.operation_names:
        InputValidator(model.operation_model(name).input_shape)
