"""SnapStart runtime hooks for Python functions (the API of AWS's ``snapshot-restore-py``).

    from snapshot_restore_py import register_before_snapshot, register_after_restore

    @register_before_snapshot
    def close_connections(): ...

    register_after_restore(reconnect, "db.internal", port=5432)

Before-snapshot hooks run once, after init, in the reverse order of their registration;
after-restore hooks run in every restored environment, in registration order, before its first
invocation. lambdad's Python bootstrap imports this module before any function code, so a copy
bundled with the function resolves to this one and shares its registry.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Hook = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]

__all__ = [
    "get_after_restore",
    "get_before_snapshot",
    "register_after_restore",
    "register_before_snapshot",
]

_before_snapshot: list[Hook] = []
_after_restore: list[Hook] = []


def register_before_snapshot(
    func: Callable[..., Any], *args: Any, **kwargs: Any
) -> Callable[..., Any]:
    """Run ``func(*args, **kwargs)`` before the snapshot is taken; usable as a decorator."""
    _before_snapshot.append((func, args, kwargs))
    return func


def register_after_restore(
    func: Callable[..., Any], *args: Any, **kwargs: Any
) -> Callable[..., Any]:
    """Run ``func(*args, **kwargs)`` in each restored environment; usable as a decorator."""
    _after_restore.append((func, args, kwargs))
    return func


def get_before_snapshot() -> list[Hook]:
    """The registered before-snapshot hooks, in registration order (the runtime pops them)."""
    return _before_snapshot


def get_after_restore() -> list[Hook]:
    """The registered after-restore hooks, in registration order."""
    return _after_restore
