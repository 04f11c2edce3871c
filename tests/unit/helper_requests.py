"""A helper process's loop for tests/unit/test_helper.py (imported by the helper: stdlib only)."""

from __future__ import annotations

import os
from typing import Any

from lambdad.sandbox.helper import serve


def serve_test_requests(fd: int) -> None:
    """Echoes, refuses with an OSError, or exits, as asked."""

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        if request.get("refuse"):
            raise FileExistsError(17, "File exists", request["refuse"])
        if request.get("exit"):
            os._exit(3)
        return {"echo": request["value"], "pid": os.getpid()}

    serve(fd, handle)
