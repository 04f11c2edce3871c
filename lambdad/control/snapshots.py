"""SnapStart's contract between the control plane and the scheduler.

Publishing a version of a function with ``SnapStart.ApplyOn = PublishedVersions`` asks a
``Snapshotter`` to initialise that version once and keep the initialised state; the version is
``Pending`` until ``create`` answers, then ``Active`` (or ``Failed`` with the reason given).
New environments of the version are restored from the snapshot by the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from lambdad.control.model import FunctionConfig

# The managed runtimes AWS offers SnapStart on (others: "<runtime> is not supported for
# SnapStart enabled functions.").
SNAP_START_RUNTIMES = frozenset(
    {"java11", "java17", "java21", "python3.12", "python3.13", "dotnet8"}
)


@dataclass(frozen=True)
class SnapshotFailure:
    """Why a version's snapshot could not be taken (the version becomes Failed)."""

    reason_code: str  # StateReasonCode, e.g. "FunctionError"
    reason: str  # StateReason, e.g. the init error's type and message


class Snapshotter(Protocol):
    async def create(self, config: FunctionConfig) -> SnapshotFailure | None:
        """Initialise `config` (a published version) once, run its before-snapshot hooks and
        keep the result; None when the snapshot is ready."""
        ...

    def discard(self, config: FunctionConfig) -> None:
        """Drop the snapshot of `config` (its version or function was deleted)."""
        ...
