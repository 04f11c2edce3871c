"""Environment: one execution environment, running one invocation at a time.

It joins three things: the sandboxed process (``SandboxProcess``), that process's Runtime API
listener (this class is its ``RuntimeApiHandler``) and its log stream (stdout/stderr pipe ->
CloudWatch-style events, START/END/REPORT lines). Everything here runs on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import orjson

from lambdad.control.model import FunctionConfig
from lambdad.observability.logs import LogStream
from lambdad.runtime.api_server import (
    ACCEPTED,
    NextReply,
    PushChannel,
    RuntimeApiServer,
    error_body,
)
from lambdad.sandbox.base import ExitStatus, SandboxProcess
from lambdad.scheduler.answer_polling import AnswerPolling, typical_duration
from lambdad.scheduler.platform_log import (
    Report,
    application_log_filter,
    now_ms,
    platform_log,
    rfc3339,
)

TAIL_BYTES = 4096
MAX_EVENT_BYTES = 256 * 1024 - 26  # CloudWatch Logs' event size limit, less its overhead
# A runtime must reach /next within this many seconds of starting (AWS's init limit).
INIT_TIMEOUT_SECONDS = 10.0


class InitializationType(StrEnum):
    """AWS_LAMBDA_INITIALIZATION_TYPE: why the environment was started."""

    ON_DEMAND = "on-demand"  # for an invocation waiting for it (a cold start)
    PROVISIONED = "provisioned-concurrency"  # ahead of any invocation, for provisioned concurrency
    SNAP_START = (
        "snap-start"  # a SnapStart version: its snapshot, or an environment restored from it
    )


class EnvironmentRole(StrEnum):
    """What the environment is for (SnapStart adds two kinds besides the usual one)."""

    RUNS = "runs"  # started (cold or provisioned) to run invocations
    SNAPSHOT = "snapshot"  # SnapStart: initialised once, then only forks restored environments
    RESTORED = "restored"  # SnapStart: forked from a snapshot, runs invocations


class RestoreFailed(Exception):
    """SnapStart: the environment's after-restore hooks failed (Invoke answers
    SnapStartException)."""

    def __init__(self, error_type: str, payload: bytes) -> None:
        super().__init__(error_type)
        self.error_type = error_type
        self.payload = payload


class EnvironmentLost(Exception):
    """The environment ended before the invocation given to it was delivered to its runtime
    (it exited after answering its previous one): the caller runs it elsewhere."""


class EnvironmentState(StrEnum):
    # built ahead of any invocation, its runtime waiting to initialise until the first arrives
    # (EnvironmentLauncher.launch's `staged`): no init has run, nothing is logged yet
    STAGED = "staged"
    STARTING = "starting"  # process launched; the runtime is initialising (no /next yet)
    IDLE = "idle"  # no invocation assigned; the runtime is (or soon will be) waiting in /next
    BUSY = "busy"  # exactly one invocation assigned and not yet answered
    DEAD = "dead"  # process ended or was killed; never used again


@dataclass
class Invocation:
    request_id: str
    payload: bytes
    invoked_arn: str
    tail: bool = False
    client_context: bytes | None = None  # JSON text for Lambda-Runtime-Client-Context
    cognito_identity: bytes | None = None  # JSON text for Lambda-Runtime-Cognito-Identity
    trace_id: bytes = b""


@dataclass(frozen=True)
class InitFailure:
    """Why an environment never became ready: its runtime's init error, a crash or a timeout."""

    error_type: str
    payload: bytes  # the error document, as an invocation waiting for it would have answered


@dataclass(frozen=True)
class InvocationResult:
    payload: bytes
    function_error: str | None = None  # "Unhandled" when the function failed
    log_tail: str | None = None  # base64 of the last 4 KB of this invocation's log
    duration_ms: float = 0.0
    init_duration_ms: float | None = None


class Environment:
    def __init__(
        self,
        config: FunctionConfig,
        log: LogStream,
        on_dead: Callable[[Environment], None],
        initialization_type: InitializationType = InitializationType.ON_DEMAND,
        role: EnvironmentRole = EnvironmentRole.RUNS,
        created: float | None = None,
        polling: AnswerPolling | None = None,
        api: RuntimeApiServer | None = None,
        staged: bool = False,
    ) -> None:
        self.config = config
        self.initialization_type = initialization_type
        self.role = role
        self.state = EnvironmentState.STAGED if staged else EnvironmentState.STARTING
        self.log = log
        self._platform = platform_log(config)  # its system log lines, in its LogFormat
        self._app_filter = application_log_filter(config)  # JSON: ApplicationLogLevel
        # its Runtime API: its own, or one served ahead for it (a prepared sandbox's)
        self.api = RuntimeApiServer(self) if api is None else api
        if api is not None:
            api.bind(self)
        self.process: SandboxProcess | None = None
        # when its launch began (time.monotonic): Init Duration counts from there
        self.created = time.monotonic() if created is None else created
        self.last_used = self.created
        self._on_dead = on_dead
        self._loop = asyncio.get_running_loop()
        self._arn_header = config.arn.encode()
        self._log_fd = -1
        self._partial = b""
        self._parked: NextReply | None = None
        # a staged environment's runtime waiting to initialise (runtime_staged_wait)
        self._stage_waiter: NextReply | None = None
        # lambdad's own bootstrap's connection: the first event is pushed before init ends
        self._push: PushChannel | None = None
        self._pushed = False  # an event was pushed; the runtime has not asked for it yet
        self._current: Invocation | None = None
        self._result: asyncio.Future[InvocationResult] | None = None
        self._delivered_at = 0.0
        self._polling = AnswerPolling(0) if polling is None else polling
        self._typical_s = math.inf  # its invocations' typical duration (answer_polling)
        self._last_request_id = ""
        self._tail: bytearray | None = None
        self._first_line: str | None = None  # INIT_START/RESTORE_START, for the first tail
        self._timer: asyncio.TimerHandle | None = None
        self._init_timer: asyncio.TimerHandle | None = None
        self._init_error: bytes | None = None
        self._init_error_type: str | None = None
        self._init_duration_ms: float | None = None
        # Init Duration goes into the first REPORT, unless init happened ahead of any request;
        # a restored environment reports its Restore Duration there instead.
        self._pending_init_report = (
            initialization_type is InitializationType.ON_DEMAND or role is EnvironmentRole.RESTORED
        )
        self._resumed_at: float | None = None  # restored: when its runtime called restore/next
        self._billed_restore_ms = 0.0
        # resolved once: None when the runtime reached /next, else why it never will
        self._initialised: asyncio.Future[InitFailure | None] = self._loop.create_future()
        self._stopping = False  # kill() was called: whatever follows is no failure of its own
        self._closed = False
        # the last invocation's END and REPORT while they wait for its answer to leave
        self._report_args: tuple[Invocation, float, float | None, str | None] | None = None

    # lifecycle ---------------------------------------------------------------------------
    def attach(self, process: SandboxProcess, log_read_fd: int) -> None:
        """Adopt the started process and the read end of its log pipe."""
        self.process = process
        self._log_fd = log_read_fd
        os.set_blocking(log_read_fd, False)
        self._loop.add_reader(log_read_fd, self._read_output)
        self._watcher = asyncio.ensure_future(self._watch(process))
        if self.state is not EnvironmentState.STAGED:
            self._begin_init()

    def _begin_init(self) -> None:
        """Init starts: its time limit, its first log line (a staged environment's, when its
        first invocation arrives)."""
        self._init_timer = self._loop.call_later(INIT_TIMEOUT_SECONDS, self._init_timed_out)
        if self.role is EnvironmentRole.RESTORED:  # a restore is no init
            first = self._platform.restore_start(self.config)
        else:
            first = self._platform.init_start(self.config, self.initialization_type)
        self._write_platform(first)
        # the invocation the environment was started for has it in its log tail too (what
        # its init prints comes after it), as AWS's
        self._first_line = first if self._pending_init_report else None

    @property
    def fresh(self) -> bool:
        """True until the first invocation has been handed to this environment."""
        return self._pending_init_report

    async def wait_initialised(self) -> InitFailure | None:
        """Wait until the runtime has initialised (reached /next): None, or why it failed."""
        return await asyncio.shield(self._initialised)

    def _settle_init(self, failure: InitFailure | None) -> None:
        if self._initialised.done():
            return
        self._initialised.set_result(failure)
        ahead = self.initialization_type is not InitializationType.ON_DEMAND
        if self.role is EnvironmentRole.RESTORED:
            ahead = self.initialization_type is InitializationType.PROVISIONED
        if failure is not None and ahead and not self._stopping:
            # No invocation will answer with this error (init ran ahead of any): log it now.
            init_ms = self._init_duration_ms or (time.monotonic() - self.created) * 1000
            self._write_platform(
                self._platform.init_failed(init_ms, failure.error_type, self.initialization_type)
            )
            self.log.flush()

    def kill(self) -> None:
        """Stop the environment (idempotent); a running invocation fails as a crash."""
        self._stopping = True
        if self.process is not None:
            self.process.kill()
        else:
            self._die(None)

    def launch_failed(self, error_type: str, message: str) -> None:
        """The process could not be started: the first invocation reports this init error."""
        self._init_error = error_body(error_type, message)
        self._init_error_type = error_type
        self._init_duration_ms = (time.monotonic() - self.created) * 1000
        self._settle_init(InitFailure(error_type, self._init_error))

    async def _watch(self, process: SandboxProcess) -> None:
        status = await process.wait()
        self._die(status)

    def _lost_before_delivery(self) -> bool:
        """An event assigned to an environment that already answered one, but never sent."""
        return self._timer is None and bool(self._last_request_id) and self._init_error is None

    def _die(self, status: ExitStatus | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._write_due_report()
        self._drain_output()
        if not self._initialised.done():
            error_type = self._init_error_type or "Runtime.ExitError"
            reason = status.describe() if status is not None else "killed"
            payload = self._init_error or error_body(
                error_type, f"Runtime exited before it was initialised: {reason}"
            )
            self._settle_init(InitFailure(error_type, payload))
        if self._current is not None and self._lost_before_delivery():
            self._current = None
            result, self._result = self._result, None
            if result is not None and not result.done():
                result.set_exception(EnvironmentLost())
        elif self._current is not None:
            self._fail_crashed(status)
        self.state = EnvironmentState.DEAD
        for timer in (self._timer, self._init_timer):
            if timer is not None:
                timer.cancel()
        if self._log_fd >= 0:
            self._loop.remove_reader(self._log_fd)
            os.close(self._log_fd)
            self._log_fd = -1
        self.api.close()
        self.log.flush()
        self.log.close()
        self._on_dead(self)

    # invoking ----------------------------------------------------------------------------
    async def invoke(self, invocation: Invocation, timeout_s: float) -> InvocationResult:
        if self.state is EnvironmentState.STAGED:  # its init starts now, for this invocation
            self.state = EnvironmentState.STARTING
            self.created = self.last_used = time.monotonic()
            self._begin_init()
            waiter, self._stage_waiter = self._stage_waiter, None
            if waiter is not None:  # (a pushed event is its runtime's signal instead)
                waiter.send([], b"{}")
        if self.state not in (EnvironmentState.STARTING, EnvironmentState.IDLE):
            raise RuntimeError(f"environment is {self.state}, cannot take an invocation")
        self._write_due_report()
        if self.state is EnvironmentState.IDLE:
            self.state = EnvironmentState.BUSY
        self._current = invocation
        self._timeout_s = timeout_s
        first, self._first_line = self._first_line, None  # (the first invocation's only)
        self._tail = bytearray(first.encode() if first else b"") if invocation.tail else None
        result: asyncio.Future[InvocationResult] = self._loop.create_future()
        self._result = result
        self._polling.started()
        try:
            if self._init_error is not None:
                self._fail_init()
            elif self._parked is not None:
                reply, self._parked = self._parked, None
                self._deliver(reply)
            elif self._push is not None and self.state is EnvironmentState.STARTING:
                self._push_event()
            return await result
        finally:
            self._polling.ended()
            self.last_used = time.monotonic()

    def accept_pushes(self, channel: PushChannel) -> None:
        """The runtime is lambdad's own bootstrap on a connection made for it: a cold start's
        event is pushed to it while it initialises (api_server's _Connection.push)."""
        self._push = channel

    def _event_headers(self, inv: Invocation) -> list[tuple[bytes, bytes]]:
        deadline = now_ms() + int(self._timeout_s * 1000)
        headers = [
            (b"Lambda-Runtime-Aws-Request-Id", inv.request_id.encode()),
            (b"Lambda-Runtime-Deadline-Ms", str(deadline).encode()),
            (b"Lambda-Runtime-Invoked-Function-Arn", inv.invoked_arn.encode()),
            (b"Lambda-Runtime-Trace-Id", inv.trace_id),
        ]
        if inv.client_context:
            headers.append((b"Lambda-Runtime-Client-Context", inv.client_context))
        if inv.cognito_identity:
            headers.append((b"Lambda-Runtime-Cognito-Identity", inv.cognito_identity))
        return headers

    def _deliver(self, reply: NextReply) -> None:
        inv = self._current
        assert inv is not None
        sent = reply.send(self._event_headers(inv), inv.payload or b"{}")
        # The event goes first: the runtime need not wait for the START line and the timer (its
        # output is read later, so START still comes first in the log).
        self._started(inv)
        if not sent:
            self.kill()
            return
        budget_ns = self._polling.budget_for(self._typical_s)
        if budget_ns:
            self._polling.polled(reply.poll_for_answer(budget_ns))

    def _started(self, inv: Invocation) -> None:
        self.state = EnvironmentState.BUSY
        self._delivered_at = time.perf_counter()
        self._write_platform(self._platform.start(inv.request_id, self.config.version))
        self._timer = self._loop.call_later(self._timeout_s, self._timed_out)

    def _push_event(self) -> None:
        """Push the first event while the runtime initialises. Its deadline is only known when
        init ends: the bootstrap takes it from Lambdad-Deadline-After-Ms when it asks (and the
        timer starts when that /next arrives, so the runtime's deadline is never the later)."""
        inv, push, self._push = self._current, self._push, None
        assert inv is not None and push is not None
        headers = self._event_headers(inv)
        headers.append((b"Lambdad-Deadline-After-Ms", b"%d" % int(self._timeout_s * 1000)))
        self._pushed = push.push(headers, inv.payload or b"{}")

    # RuntimeApiHandler ---------------------------------------------------------------------
    def runtime_next(self, reply: NextReply) -> None:
        if self._left_its_stage():
            return
        self._mark_initialised()
        if self._current is not None and self._timer is None:
            self._deliver(reply)
        else:
            self._parked = reply

    def runtime_next_pushed(self, asked_at: float | None) -> None:
        if self._left_its_stage():
            return
        self._mark_initialised()
        inv = self._current
        if not self._pushed or inv is None or self._timer is not None:
            self.kill()  # the runtime holds an event lambdad does not expect it to run
            return
        self._pushed = False
        self._started(inv)
        # The runtime had the event when it asked (a moment before lambdad read that): its
        # Duration starts then (never before its launch began, whatever it says; perf_counter
        # and monotonic are the same clock, CLOCK_MONOTONIC, on Linux).
        if asked_at is not None:
            self._delivered_at = min(self._delivered_at, max(asked_at, self.created))

    def _left_its_stage(self) -> bool:
        """A staged environment's runtime must wait for its first event before init: one that
        reports init done or failed before that is stopped (True)."""
        if self.state is not EnvironmentState.STAGED:
            return False
        self.kill()
        return True

    def _mark_initialised(self) -> None:
        if self.state is EnvironmentState.STARTING or self._init_duration_ms is None:
            now = time.monotonic()
            self._init_duration_ms = (now - self.created) * 1000
            if self._resumed_at is not None:
                self._billed_restore_ms = (now - self._resumed_at) * 1000
            if self._init_timer is not None:
                self._init_timer.cancel()
                self._init_timer = None
            if self.state is EnvironmentState.STARTING:
                self.state = EnvironmentState.IDLE
            self._write_platform(self._platform.init_done(self.initialization_type))
            if self.process is not None:  # sample once now: a crashed process has nothing to read
                self.process.peak_memory_bytes()
                self.process.initialised(self.config.memory_size)
            self._settle_init(None)

    def runtime_response(self, request_id: str, body: bytes, too_large: bool) -> tuple[int, bytes]:
        rejected = self._check_request_id(request_id)
        if rejected is not None:
            return rejected
        if too_large:
            self._finish(
                error_body(
                    "Function.ResponseSizeTooLarge",
                    "Response payload size exceeded maximum allowed payload size (6291556 bytes).",
                ),
                "Unhandled",
            )
            return 413, error_body(
                "RequestEntityTooLarge", "Exceeded maximum allowed payload size (6291556 bytes)."
            )
        self._finish(body, None)
        return ACCEPTED

    def runtime_error(
        self, request_id: str, error_type: str | None, body: bytes
    ) -> tuple[int, bytes]:
        rejected = self._check_request_id(request_id)
        if rejected is not None:
            return rejected
        self._finish(_error_payload(error_type, body), "Unhandled")
        return ACCEPTED

    def runtime_init_error(self, error_type: str | None, body: bytes) -> tuple[int, bytes]:
        done = self._init_error is not None or self._init_duration_ms is not None
        if self._left_its_stage() or done:
            return 403, error_body(
                "InvalidStateTransition", "State transition is not allowed: init already done"
            )
        self._init_error = _error_payload(error_type, body)
        self._init_error_type = error_type or _error_type_of(self._init_error)
        self._init_duration_ms = (time.monotonic() - self.created) * 1000
        self._settle_init(InitFailure(self._init_error_type, self._init_error))
        if self._current is not None:
            self._fail_init()
        return ACCEPTED

    def runtime_restore_next(self) -> tuple[int, bytes]:
        if self.role is EnvironmentRole.SNAPSHOT and not self._initialised.done():
            # Init and the before-snapshot hooks are done: this process is the snapshot now.
            self._init_duration_ms = (time.monotonic() - self.created) * 1000
            if self._init_timer is not None:
                self._init_timer.cancel()
                self._init_timer = None
            self.state = EnvironmentState.IDLE
            self._write_platform(
                self._platform.init_report(self._init_duration_ms, self.initialization_type)
            )
            self.log.flush_soon()
            self._settle_init(None)
            return 200, b""
        if self.role is EnvironmentRole.RESTORED and self._resumed_at is None:
            self._resumed_at = time.monotonic()
            return 200, b""
        return 403, error_body(
            "InvalidStateTransition", "State transition is not allowed: not restoring"
        )

    def runtime_restore_error(self, error_type: str | None, body: bytes) -> tuple[int, bytes]:
        if self.role is not EnvironmentRole.RESTORED or self._resumed_at is None:
            return 403, error_body(
                "InvalidStateTransition", "State transition is not allowed: not restoring"
            )
        return self.runtime_init_error(error_type or "Runtime.AfterRestoreError", body)

    def runtime_staged_wait(self, reply: NextReply) -> None:
        if self.state is EnvironmentState.STAGED:
            self._stage_waiter = reply
        else:  # its invocation came first (or it was never staged): init may run now
            reply.send([], b"{}")

    def runtime_connection_lost(self) -> None:
        self._parked = None
        self._stage_waiter = None

    def _check_request_id(self, request_id: str) -> tuple[int, bytes] | None:
        inv = self._current
        if inv is not None and inv.request_id == request_id and self._timer is not None:
            return None
        if request_id == self._last_request_id:
            return 403, error_body(
                "InvalidStateTransition",
                "State transition from Ready to InvocationResponse failed for runtime. "
                "Error: State transition is not allowed",
            )
        return 400, error_body("InvalidRequestID", "Invalid request ID")

    # outcomes -------------------------------------------------------------------------------
    def _finish(
        self, payload: bytes, function_error: str | None, status: str | None = None
    ) -> None:
        inv, result = self._current, self._result
        if inv is None or result is None:
            return
        duration_ms = (time.perf_counter() - self._delivered_at) * 1000 if self._timer else 0.0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._typical_s = typical_duration(self._typical_s, duration_ms / 1000)
        init_ms = None
        if self._pending_init_report:
            self._pending_init_report = False
            init_ms = self._init_duration_ms
        tail = None
        if self._tail is not None or self._closed:  # (the tail ends with END and REPORT)
            self._write_report(inv, duration_ms, init_ms, status)
            if self._tail is not None:
                tail = base64.b64encode(bytes(self._tail[-TAIL_BYTES:])).decode()
        else:
            self._report_args = (inv, duration_ms, init_ms, status)
        self._current = None
        self._result = None
        self._tail = None
        self._last_request_id = inv.request_id
        if self.state is EnvironmentState.BUSY:
            self.state = EnvironmentState.IDLE
        if not result.done():
            result.set_result(InvocationResult(payload, function_error, tail, duration_ms, init_ms))
        if self._report_args is not None:
            # The answer goes first: END and REPORT (the output still in the pipe, the peak
            # memory read, the lines formatted) follow once the caller has been woken, a loop
            # callback later (~20 us less between the runtime's answer and the reply here).
            # Whatever this environment runs next, or its death, writes them first (then the
            # callback finds nothing due).
            self._loop.call_soon(self._write_due_report)

    def _write_report(
        self, inv: Invocation, duration_ms: float, init_ms: float | None, status: str | None
    ) -> None:
        """An invocation's output still in the pipe, then its END and REPORT lines."""
        self._drain_output()
        self._write_platform(self._platform.end(inv.request_id, duration_ms, status))
        self._write_platform(self._platform.report(self._report(inv, duration_ms, init_ms, status)))
        self.log.flush_soon()

    def _write_due_report(self) -> None:
        """The last invocation's END and REPORT, if they are still due."""
        args, self._report_args = self._report_args, None
        if args is not None:
            self._write_report(*args)

    def _report(
        self, inv: Invocation, duration_ms: float, init_ms: float | None, status: str | None
    ) -> Report:
        used_mb = 0
        if self.process is not None:
            used_mb = math.ceil(self.process.peak_memory_bytes() / 1048576)
        memory_mb = self.config.memory_size
        if init_ms is not None and self.role is EnvironmentRole.RESTORED:
            billed = max(1, math.ceil(self._billed_restore_ms))
            return Report(
                inv.request_id,
                duration_ms,
                memory_mb,
                used_mb,
                restore_ms=init_ms,  # (a restore's duration is what init_ms holds then)
                billed_restore_ms=billed,
                status=status,
            )
        return Report(
            inv.request_id, duration_ms, memory_mb, used_mb, init_ms=init_ms, status=status
        )

    def _timed_out(self) -> None:
        inv = self._current
        if inv is None:
            return
        self._timer = None
        seconds = f"{self._timeout_s:.2f}"
        self._write_platform(
            f"{rfc3339(now_ms())} {inv.request_id} Task timed out after {seconds} seconds\n"
        )
        payload = error_body(
            "Sandbox.Timedout",
            f"RequestId: {inv.request_id} Error: Task timed out after {seconds} seconds",
        )
        # Report with the full timeout as the duration, then kill: the next invoke starts fresh.
        self._delivered_at = time.perf_counter() - self._timeout_s
        self._timer = self._loop.call_later(0, lambda: None)
        self._finish(payload, "Unhandled", status="timeout")
        self.state = EnvironmentState.DEAD
        self.kill()

    def _init_timed_out(self) -> None:
        self._init_timer = None
        if self.state is EnvironmentState.STARTING:
            self._init_error = error_body(
                "Sandbox.Timedout",
                f"Error: Init timed out after {INIT_TIMEOUT_SECONDS:.2f} seconds",
            )
            self._init_error_type = "Sandbox.Timedout"
            self._init_duration_ms = INIT_TIMEOUT_SECONDS * 1000
            self._settle_init(InitFailure(self._init_error_type, self._init_error))
            if self._current is not None:
                self._fail_init()
            self.state = EnvironmentState.DEAD
            self.kill()

    def _fail_init(self) -> None:
        inv = self._current
        assert inv is not None and self._init_error is not None
        init_ms = self._init_duration_ms or 0.0
        if self.role is EnvironmentRole.RESTORED and self._resumed_at is not None:
            self._fail_restore(inv)
            return
        error_type = str(self._init_error_type)  # set with _init_error
        self._write_platform(
            self._platform.init_failed(init_ms, error_type, self.initialization_type)
        )
        self._write_platform(self._platform.start(inv.request_id, self.config.version))
        self._pending_init_report = False
        self._init_duration_ms = None
        self._finish(self._init_error, "Unhandled", status="error")
        self.state = EnvironmentState.DEAD
        self.kill()

    def _fail_restore(self, inv: Invocation) -> None:
        """The after-restore hooks failed: the invocation never starts (SnapStartException)."""
        assert self._init_error is not None
        restore_ms = self._init_duration_ms or 0.0
        error_type = self._init_error_type or "Runtime.AfterRestoreError"
        self._write_platform(self._platform.restore_failed(restore_ms, error_type))
        self.log.flush_soon()
        self._current = None
        result, self._result = self._result, None
        self._last_request_id = inv.request_id
        if result is not None and not result.done():
            result.set_exception(RestoreFailed(error_type, self._init_error))
        self.state = EnvironmentState.DEAD
        self.kill()

    def _fail_crashed(self, status: ExitStatus | None) -> None:
        inv = self._current
        assert inv is not None
        if self._init_error is not None:
            self._fail_init()
            return
        if status is None or (status.code == 0 and status.signal is None):
            reason = "Runtime exited without providing a reason"
        else:
            reason = f"Runtime exited with error: {status.describe()}"
        message = f"RequestId: {inv.request_id} Error: {reason}"
        error_type = "Runtime.OutOfMemory" if self._out_of_memory() else "Runtime.ExitError"
        if self._timer is None:  # it died before the invocation was handed over (in init)
            if self._init_duration_ms is None:
                init_ms = (time.monotonic() - self.created) * 1000
                self._write_platform(
                    self._platform.init_failed(init_ms, error_type, self.initialization_type)
                )
                self._pending_init_report = False
            self._write_platform(self._platform.start(inv.request_id, self.config.version))
            self._delivered_at = time.perf_counter()
            self._timer = self._loop.call_later(0, lambda: None)
        self._write_platform(f"{message}\n{error_type}\n")
        self._finish(error_body(error_type, message), "Unhandled", status="error")

    def _out_of_memory(self) -> bool:
        return self.process is not None and self.process.out_of_memory()

    # logs ------------------------------------------------------------------------------------
    def _read_output(self) -> None:
        try:
            data = os.read(self._log_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._loop.remove_reader(self._log_fd)
            return
        self._output(data)

    def _drain_output(self) -> None:
        if self._log_fd < 0:
            return
        while True:
            try:
                data = os.read(self._log_fd, 65536)
            except (BlockingIOError, OSError):
                break
            if not data:
                break
            self._output(data)
        if self._partial:
            self._emit(self._partial + b"\n")
            self._partial = b""

    def _output(self, data: bytes) -> None:
        data = self._partial + data
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        if cut:
            self._emit(data[:cut])

    def _emit(self, chunk: bytes) -> None:
        lines = chunk.splitlines(keepends=True)
        if self._app_filter is not None:
            lines = [line for line in lines if self._app_filter.keeps(line)]
            chunk = b"".join(lines)
        if self._tail is not None:
            self._tail += chunk
        ts = now_ms()
        for line in lines:
            # CloudWatch Logs caps an event at 256 KB: longer lines become several events.
            for start in range(0, len(line), MAX_EVENT_BYTES):
                self.log.write(line[start : start + MAX_EVENT_BYTES].decode("utf-8", "replace"), ts)

    def _write_platform(self, line: str | None) -> None:
        """Write one of lambdad's own lines (None: its format leaves the event out)."""
        if line is None:
            return
        if self._tail is not None:
            self._tail += line.encode()
        self.log.write(line)


def _error_payload(error_type: str | None, body: bytes) -> bytes:
    """The runtime's error document, passed through when it is JSON (AWS does the same)."""
    try:
        document = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        document = None
    if isinstance(document, dict):
        return body
    return error_body(error_type or "Runtime.Unknown", body.decode("utf-8", "replace"))


def _error_type_of(payload: bytes) -> str:
    with contextlib.suppress(orjson.JSONDecodeError):
        document = orjson.loads(payload)
        if isinstance(document, dict) and isinstance(document.get("errorType"), str):
            return str(document["errorType"])
    return "Runtime.Unknown"
