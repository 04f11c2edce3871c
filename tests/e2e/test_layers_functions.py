"""Functions using layers: /opt assembled in order, search paths per runtime, AWS's limits."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ROLE, create_function, make_zip, unique_name


def publish(lam: Any, files: dict[str, str | bytes], modes: dict[str, int] | None = None) -> str:
    name = unique_name("layer")
    reply = lam.publish_layer_version(LayerName=name, Content={"ZipFile": make_zip(files, modes)})
    return str(reply["LayerVersionArn"])


def invoke(lam: Any, name: str, payload: Any = None) -> tuple[Any, str | None]:
    reply = lam.invoke(FunctionName=name, Payload=json.dumps(payload or {}).encode())
    return json.loads(reply["Payload"].read()), reply.get("FunctionError")


def test_python_imports_from_opt_python_and_later_layers_win(lam: Any) -> None:
    first = publish(lam, {"python/shared.py": "WHO = 'first'\n", "python/only_first.py": "X=1\n"})
    second = publish(lam, {"python/shared.py": "WHO = 'second'\n"})
    name = create_function(
        lam,
        {
            "app.py": "import shared, only_first\n"
            "def handler(e, c):\n    return [shared.WHO, only_first.X]\n"
        },
        Layers=[first, second],
    )
    assert invoke(lam, name) == (["second", 1], None)
    config = lam.get_function_configuration(FunctionName=name)
    assert [layer["Arn"] for layer in config["Layers"]] == [first, second]
    assert all(layer["CodeSize"] > 0 for layer in config["Layers"])


def test_site_packages_layout_and_opt_is_read_only(lam: Any) -> None:
    layer = publish(lam, {"python/lib/python3.11/site-packages/deplib.py": "VALUE = 42\n"})
    name = create_function(
        lam,
        {
            "app.py": "import deplib\n"
            "def handler(e, c):\n"
            "    try:\n        open('/opt/x', 'w')\n        writable = True\n"
            "    except OSError:\n        writable = False\n"
            "    return [deplib.VALUE, writable]\n"
        },
        Layers=[layer],
    )
    assert invoke(lam, name) == ([42, False], None)


def test_node_modules_from_a_layer(lam: Any) -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    layer = publish(lam, {"nodejs/node_modules/greet/index.js": "module.exports = () => 'hi';\n"})
    name = create_function(
        lam,
        {"index.js": "const greet = require('greet');\nexports.handler = async () => greet();\n"},
        runtime="nodejs20.x",
        handler="index.handler",
        Layers=[layer],
    )
    assert invoke(lam, name) == ("hi", None)


def test_custom_runtime_bootstrap_from_a_layer(lam: Any) -> None:
    bootstrap = (
        "#!/bin/sh\n"
        "while true; do\n"
        "  H=$(mktemp)\n"
        "  curl_out=$(python3 - \"$AWS_LAMBDA_RUNTIME_API\" <<'PY'\n"
        "import sys, urllib.request\n"
        "api = sys.argv[1]\n"
        "r = urllib.request.urlopen(f'http://{api}/2018-06-01/runtime/invocation/next')\n"
        "rid = r.headers['Lambda-Runtime-Aws-Request-Id']\n"
        "urllib.request.urlopen(urllib.request.Request(\n"
        "    f'http://{api}/2018-06-01/runtime/invocation/{rid}/response',\n"
        "    data=b'\"from-layer\"', method='POST'))\n"
        "PY\n"
        ")\n"
        "done\n"
    )
    layer = publish(lam, {"bootstrap": bootstrap}, {"bootstrap": 0o755})
    name = create_function(
        lam,
        {"README": "code without a bootstrap"},
        runtime="provided.al2023",
        handler="x",
        Layers=[layer],
    )
    assert invoke(lam, name) == ("from-layer", None)


def test_deleted_version_keeps_working_for_existing_functions_only(lam: Any) -> None:
    layer = publish(lam, {"python/kept.py": "OK = True\n"})
    code = {"app.py": "import kept\ndef handler(e, c):\n    return kept.OK\n"}
    name = create_function(lam, code, Layers=[layer])
    number = int(layer.rsplit(":", 1)[1])
    lam.delete_layer_version(LayerName=layer.split(":")[6], VersionNumber=number)
    lam.update_function_configuration(FunctionName=name, MemorySize=256)  # new environments
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert invoke(lam, name) == (True, None)
    with pytest.raises(ClientError) as refused:
        create_function(lam, code, Layers=[layer])
    assert refused.value.response["Error"]["Code"] == "InvalidParameterValueException"


def test_six_layers_are_refused_and_nothing_is_created(lam: Any) -> None:
    arns = [publish(lam, {f"python/m{i}.py": "A = 1\n"}) for i in range(6)]
    name = unique_name()
    with pytest.raises(ClientError) as refused:
        lam.create_function(
            FunctionName=name,
            Runtime="python3.11",
            Role=ROLE,
            Handler="app.handler",
            Code={"ZipFile": make_zip({"app.py": "def handler(e, c):\n    return 1\n"})},
            Layers=arns,
        )
    error = refused.value.response
    assert error["Error"]["Code"] == "InvalidParameterValueException"
    assert error["message"] == "Cannot reference more than 5 layers."
    with pytest.raises(ClientError):
        lam.get_function(FunctionName=name)


def test_update_configuration_changes_and_removes_layers(lam: Any) -> None:
    one = publish(lam, {"python/which.py": "N = 1\n"})
    two = publish(lam, {"python/which.py": "N = 2\n"})
    code = {"app.py": "def handler(e, c):\n    import which\n    return which.N\n"}
    name = create_function(lam, code, Layers=[one])
    assert invoke(lam, name) == (1, None)
    lam.update_function_configuration(FunctionName=name, Layers=[two])
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert invoke(lam, name) == (2, None)
    lam.update_function_configuration(FunctionName=name, Layers=[])
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    body, error = invoke(lam, name)
    assert error == "Unhandled" and body["errorType"] == "ModuleNotFoundError"
    assert "Layers" not in lam.get_function_configuration(FunctionName=name)
