"""SnapStart's contract between the control plane and the scheduler.

Publishing a version of a function with ``SnapStart.ApplyOn = PublishedVersions`` asks a
``Snapshotter`` to initialise that version once and keep the initialised state; the version is
``Pending`` until ``create`` answers, then ``Active`` (or ``Failed`` with the reason given).
New environments of the version are restored from the snapshot by the scheduler.

``SnapshotTasks`` runs the ``create`` calls in the background for the FunctionRegistry, one task
per version, and hands each outcome back to it (the PublishVersion response never waits for a
snapshot). Versions persisted while Pending (the server stopped mid-snapshot) are snapshotted
again at start-up. Without a snapshotter (``NoSnapshotter``) every SnapStart version fails with
``InternalError``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from lambdad.control.model import FunctionConfig, FunctionState
from lambdad.errors import InvalidParameterValueException

log = logging.getLogger(__name__)

# The managed runtimes AWS offers SnapStart on (others: "<runtime> is not supported for
# SnapStart enabled functions."); java25 and dotnet10 as recorded from AWS.
SNAP_START_RUNTIMES = frozenset(
    {"java11", "java17", "java21", "java25", "python3.12", "python3.13", "dotnet8", "dotnet10"}
)
PUBLISHED_VERSIONS = "PublishedVersions"  # SnapStart.ApplyOn that snapshots published versions
# A snapshot holds /tmp too: AWS offers SnapStart with at most 512 MB of it.
SNAP_START_MAX_EPHEMERAL_MB = 512


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


def check_snap_start(runtime: str, apply_on: str, ephemeral_storage_mb: int) -> None:
    """AWS's refusals of SnapStart: on a runtime that does not offer it, and with more than
    512 MB of /tmp (both in AWS's "<what> is not supported for SnapStart enabled functions."
    form)."""
    if apply_on != PUBLISHED_VERSIONS:
        return
    if runtime not in SNAP_START_RUNTIMES:
        raise InvalidParameterValueException(
            f"{runtime} is not supported for SnapStart enabled functions."
        )
    if ephemeral_storage_mb > SNAP_START_MAX_EPHEMERAL_MB:
        raise InvalidParameterValueException(
            f"EphemeralStorage size greater than {SNAP_START_MAX_EPHEMERAL_MB} MB is not "
            "supported for SnapStart enabled functions."
        )


def settled(version: FunctionConfig, failure: SnapshotFailure | None) -> FunctionConfig:
    """A Pending SnapStart version once its snapshot is taken (Active) or refused (Failed).
    Its RevisionId stays: the version's content did not change."""
    if failure is None:
        return version.evolve(state=FunctionState.ACTIVE, state_reason=None, state_reason_code=None)
    return version.evolve(
        state=FunctionState.FAILED,
        state_reason=failure.reason,
        state_reason_code=failure.reason_code,
    )


class NoSnapshotter:
    """The server's snapshotter when none is wired: every snapshot fails (InternalError)."""

    async def create(self, config: FunctionConfig) -> SnapshotFailure | None:
        return SnapshotFailure("InternalError", "SnapStart is not available on this server.")

    def discard(self, config: FunctionConfig) -> None:
        pass


class FakeSnapshotter:
    """The shipped fake: each snapshot waits for `release`, then answers `failure`."""

    def __init__(self, failure: SnapshotFailure | None = None) -> None:
        self.failure = failure
        self.release = asyncio.Event()
        self.created: list[str] = []  # qualified ARNs, in the order create was called
        self.discarded: list[str] = []  # qualified ARNs, in the order discard was called

    async def create(self, config: FunctionConfig) -> SnapshotFailure | None:
        self.created.append(config.qualified_arn)
        await self.release.wait()
        return self.failure

    def discard(self, config: FunctionConfig) -> None:
        self.discarded.append(config.qualified_arn)


Settle = Callable[[FunctionConfig, SnapshotFailure | None], None]


class SnapshotTasks:
    """One background task per SnapStart version being snapshotted."""

    def __init__(self, snapshotter: Snapshotter, settle: Settle) -> None:
        self._snapshotter = snapshotter
        self._settle = settle  # called with the Pending version and the outcome
        # qualified ARN of a Pending version -> the task taking its snapshot
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, version: FunctionConfig) -> None:
        """Take the snapshot of a Pending version (needs a running event loop)."""
        key = version.qualified_arn
        if key not in self._tasks:
            self._tasks[key] = asyncio.get_running_loop().create_task(self._take(version))

    def discard(self, version: FunctionConfig) -> None:
        """Stop taking the snapshot of a deleted version and drop what was taken."""
        task = self._tasks.pop(version.qualified_arn, None)
        if task is not None:
            task.cancel()
        self._snapshotter.discard(version)

    @property
    def in_progress(self) -> int:
        return len(self._tasks)

    async def wait_settled(self) -> None:
        """Wait until every snapshot started so far has settled (or was cancelled)."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def close(self) -> None:
        """Cancel the snapshots in progress; their versions stay Pending (taken again at the
        next start)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _take(self, version: FunctionConfig) -> None:
        try:
            failure = await self._snapshotter.create(version)
        except Exception as error:  # a task boundary: the version must not stay Pending
            log.exception("snapshot of %s failed", version.qualified_arn)
            failure = SnapshotFailure("InternalError", f"{type(error).__name__}: {error}")
        finally:
            self._tasks.pop(version.qualified_arn, None)
        try:
            self._settle(version, failure)
        except Exception:
            log.exception("recording the snapshot of %s failed", version.qualified_arn)
