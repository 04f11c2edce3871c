"""Figure 7, SnapStart: the first Invoke of an environment restored from a snapshot, beside the
cold start of the same function's code in an on-demand environment (baseline C), which runs the
whole init.

The function's init takes at least 500 ms, as one that creates a boto3 client would. boto3 is
not available in the sandbox, so the init does real work of that kind — it imports heavy
standard-library modules (asyncio, email, http.client, decimal, json, logging, xml.etree,
sqlite3, ...) and builds a few MB of module state (a service-model-like dict, an in-memory
SQLite table, a parsed XML document) — then sleeps until 550 ms have passed since it began. The
handler answers how long the real work took, so the report can say how much was sleep.

Every sample needs an environment no invocation has used yet, so each one publishes a new version
(UpdateFunctionConfiguration with a new Description, PublishVersion, wait until the version's
snapshot is taken and it is Active), lets the restored environments lambdad pre-forks for the
snapshot settle, then times one Invoke of that version with the keep-alive client. The version is
deleted afterwards (its snapshot and environments with it). Baseline C's samples, first Invokes
of fresh copies of the function without SnapStart, are taken between them.
"""

from __future__ import annotations

import gc
import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.figures import init_duration, tail_log
from bench.harness import (
    KeepAliveClient,
    ManagedProcess,
    Reply,
    check_ok,
    create_function,
    function_zip,
    invoke_path,
    signed_request,
)
from bench.stats import Summary

RUNTIME = "python3.12"
FUNCTION = "bench-snapstart"
MEMORY_MB = 128  # AWS's default, as the cold start figure uses
INIT_FLOOR_S = 0.55  # the init sleeps until this long after it began
SETTLE_S = 0.3  # after Active: let the snapshot's pre-forked restores finish in the background
POLL_S = 0.05  # waiter delay (botocore's default for these waiters is 1 s)
TARGET_MS = 10.0  # the target: first invoke p50 after a restore
PAYLOAD = b'{"snapstart":true}'
RESTORE_DURATION = re.compile(r"(?<!Billed )Restore Duration: ([0-9.]+) ms")

HEAVY_INIT = """\
import os
import time

STARTED = time.perf_counter()

import argparse
import asyncio
import concurrent.futures
import csv
import decimal
import difflib
import email.mime.multipart
import email.mime.text
import email.parser
import html.parser
import http.client
import json
import logging
import sqlite3
import tarfile
import urllib.request
import uuid
import xml.etree.ElementTree as ElementTree
import zipfile

LOG = logging.getLogger("bench")
CONTEXT = decimal.Context(prec=34)
# a few MB of module state, as an SDK client's service model and endpoint tables would be
MODEL = {
    f"Operation{i}": {"http": {"method": "POST", "path": f"/v1/op/{i}"}, "input": list(range(24))}
    for i in range(12_000)
}
DB = sqlite3.connect(":memory:", check_same_thread=False)
DB.execute("CREATE TABLE shapes (id INTEGER PRIMARY KEY, name TEXT, doc TEXT)")
SHAPES = [(i, f"Shape{i}", "d" * 80) for i in range(20_000)]
DB.executemany("INSERT INTO shapes VALUES (?, ?, ?)", SHAPES)
ENDPOINTS = "".join(f"<e region='r{i}' host='h{i}.example'/>" for i in range(8_000))
DOCUMENT = ElementTree.fromstring(f"<endpoints>{ENDPOINTS}</endpoints>")
WORK_MS = (time.perf_counter() - STARTED) * 1000
time.sleep(max(0.0, float(os.environ["INIT_FLOOR_S"]) - (time.perf_counter() - STARTED)))


def handler(event, context):
    return {"work_ms": WORK_MS, "operations": len(MODEL), "endpoints": len(DOCUMENT)}
"""


@dataclass(frozen=True)
class SnapStartPlan:
    restores: int  # versions published, each invoked once (a restore each)
    on_demand: int  # fresh copies without SnapStart, each invoked once (baseline C)

    @classmethod
    def for_mode(cls, quick: bool) -> SnapStartPlan:
        return cls(restores=8, on_demand=3) if quick else cls(restores=20, on_demand=5)


@dataclass(frozen=True)
class SnapStartResults:
    runtime: str
    memory_mb: int
    first_invoke: Summary  # first Invoke of a restored environment, client-side, ms
    restore: Summary | None  # the REPORT line's Restore Duration of those invocations, ms
    not_restored: int  # first invocations whose REPORT had no Restore Duration
    on_demand: Summary  # baseline C: first Invoke of a fresh copy without SnapStart, ms
    on_demand_init: Summary | None  # their REPORT line's Init Duration, ms
    snapshot: Summary  # PublishVersion until the version is Active (init + snapshot), ms
    init_work: Summary  # the init's real work before its sleep, as the handler reports it, ms
    init_floor_ms: float
    elapsed_s: float


def restore_duration(reply: Reply) -> float | None:
    match = RESTORE_DURATION.search(tail_log(reply))
    return float(match.group(1)) if match else None


def _create(lam: Any, name: str, code: bytes, snapstart: bool) -> None:
    settings: dict[str, Any] = {
        "MemorySize": MEMORY_MB,
        "Environment": {"Variables": {"INIT_FLOOR_S": str(INIT_FLOOR_S)}},
    }
    if snapstart:
        settings["SnapStart"] = {"ApplyOn": "PublishedVersions"}
    create_function(lam, name, code, runtime=RUNTIME, **settings)


def _fast_wait(lam: Any, waiter: str, **params: Any) -> None:
    """A botocore waiter polling every POLL_S (it sleeps `Delay` as given, fractions too)."""
    config = {"Delay": POLL_S, "MaxAttempts": int(60 / POLL_S)}
    lam.get_waiter(waiter).wait(**params, WaiterConfig=config)


def _publish(lam: Any, sample: int) -> tuple[str, float]:
    """A new version of the SnapStart function, Active (snapshot taken); and the ms it took."""
    lam.update_function_configuration(FunctionName=FUNCTION, Description=f"sample {sample}")
    _fast_wait(lam, "function_updated_v2", FunctionName=FUNCTION)
    started = time.perf_counter()
    version = str(lam.publish_version(FunctionName=FUNCTION)["Version"])
    _fast_wait(lam, "function_active_v2", FunctionName=FUNCTION, Qualifier=version)
    return version, (time.perf_counter() - started) * 1000


def _timed_first_invoke(
    server: ManagedProcess, client: KeepAliveClient, name: str, qualifier: str | None = None
) -> tuple[float, Reply]:
    """One timed Invoke with a Tail log; the client's garbage collector paused."""
    tail = {"X-Amz-Log-Type": "Tail"}
    request = signed_request(server.url, invoke_path(name, qualifier), PAYLOAD, tail)
    gc.collect()
    gc.disable()
    try:
        elapsed, reply = client.timed_post(request)
    finally:
        gc.enable()
    check_ok(reply)
    return elapsed, reply


@dataclass
class _Samples:
    first: list[float] = field(default_factory=list)  # first invokes of restored environments
    restores: list[float] = field(default_factory=list)  # their Restore Duration
    on_demand: list[float] = field(default_factory=list)  # baseline C's cold starts
    inits: list[float] = field(default_factory=list)  # their Init Duration
    snapshots: list[float] = field(default_factory=list)  # PublishVersion until Active
    work: list[float] = field(default_factory=list)  # the init's work, as the handler reports it

    def add_work(self, reply: Reply) -> None:
        self.work.append(float(orjson.loads(reply.body)["work_ms"]))


def _restore_sample(
    server: ManagedProcess, lam: Any, client: KeepAliveClient, index: int, samples: _Samples
) -> None:
    version, snapshot_ms = _publish(lam, index)
    samples.snapshots.append(snapshot_ms)
    time.sleep(SETTLE_S)
    elapsed, reply = _timed_first_invoke(server, client, FUNCTION, version)
    samples.first.append(elapsed)
    samples.add_work(reply)
    restore = restore_duration(reply)
    if restore is not None:
        samples.restores.append(restore)
    lam.delete_function(FunctionName=FUNCTION, Qualifier=version)


def _on_demand_sample(
    server: ManagedProcess, client: KeepAliveClient, name: str, samples: _Samples
) -> None:
    elapsed, reply = _timed_first_invoke(server, client, name)
    samples.on_demand.append(elapsed)
    samples.add_work(reply)
    init = init_duration(reply)
    if init is not None:
        samples.inits.append(init)


def measure_snapstart(
    server: ManagedProcess, lam: Any, client: KeepAliveClient, plan: SnapStartPlan
) -> SnapStartResults:
    """Restores of fresh versions, with baseline C's on-demand cold starts spread among them."""
    started = time.monotonic()
    code = function_zip(HEAVY_INIT)
    copies = [f"{FUNCTION}-on-demand-{i:02d}" for i in range(plan.on_demand)]
    _create(lam, FUNCTION, code, snapstart=True)
    for name in copies:
        _create(lam, name, code, snapstart=False)
    samples = _Samples()
    every = max(1, plan.restores // max(plan.on_demand, 1))
    pending = list(copies)
    for index in range(plan.restores):
        if index % every == 0 and pending:
            _on_demand_sample(server, client, pending.pop(0), samples)
        _restore_sample(server, lam, client, index, samples)
    for name in pending:
        _on_demand_sample(server, client, name, samples)
    for name in [FUNCTION, *copies]:
        lam.delete_function(FunctionName=name)
    return SnapStartResults(
        RUNTIME,
        MEMORY_MB,
        Summary.of(samples.first),
        Summary.of(samples.restores) if samples.restores else None,
        len(samples.first) - len(samples.restores),
        Summary.of(samples.on_demand),
        Summary.of(samples.inits) if samples.inits else None,
        Summary.of(samples.snapshots),
        Summary.of(samples.work),
        INIT_FLOOR_S * 1000,
        time.monotonic() - started,
    )
