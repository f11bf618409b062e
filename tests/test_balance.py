"""Keep-alive connections spread over the workers (crlm.serving.balance): the shared load file, the rule that
closes a connection of the busier worker, and the header the admission layer adds for it."""

from __future__ import annotations

import asyncio
import math

import pytest

from crlm.serving.admission import AdmissionMiddleware, AdmissionSettings
from crlm.serving.balance import LOAD_TIME_S, MARGIN, ConnectionBalance
from crlm.serving.readiness import LOAD_FILE, WorkerReadiness


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pair(tmp_path, clock):
    path = tmp_path / "server" / "load"
    return ConnectionBalance(2, 0, path, clock), ConnectionBalance(2, 1, path, clock)


def test_the_busier_worker_closes_once_its_load_stands_above_the_other(tmp_path):
    clock = Clock()
    a, b = pair(tmp_path, clock)
    assert a.loads() == [0.0, 0.0] and not a.should_close() and not b.should_close()
    a.observe(8)  # eight keep-alive clients all landed on worker 0
    assert not a.should_close()  # a moment of eight is a burst, not a load
    clock.now += 3 * LOAD_TIME_S
    a_load, b_load = b.loads()  # each reads the other's slot, brought to the present
    assert a_load == pytest.approx(8 * (1 - math.exp(-3)))
    assert b_load == 0.0 and a.should_close() and not b.should_close()


def test_balanced_workers_keep_their_connections(tmp_path):
    clock = Clock()
    a, b = pair(tmp_path, clock)
    for count_a, count_b in [(4, 4), (3, 4), (4, 3), (4, 2), (4, 4)]:  # clients between two requests
        a.observe(count_a)
        b.observe(count_b)
        clock.now += LOAD_TIME_S / 10
        assert not a.should_close() and not b.should_close()
        assert abs(a.loads()[0] - a.loads()[1]) < MARGIN


def test_an_idle_worker_is_seen_idle_without_writing(tmp_path):
    clock = Clock()
    a, b = pair(tmp_path, clock)
    b.observe(6)
    clock.now += 5 * LOAD_TIME_S
    b.observe(0)  # its last answer; then it writes nothing more
    a.observe(2)
    assert b.loads()[1] > 5 and not a.should_close()
    clock.now += 5 * LOAD_TIME_S  # idle meanwhile: its slot decays towards its count, 0
    assert a.loads()[1] < 0.1 and a.should_close()  # 2 in flight here against an idle worker


def test_the_admission_layer_closes_the_connection_the_balance_names(tmp_path):
    clock = Clock()
    mine, other = pair(tmp_path, clock)

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"json")]})
        await send({"type": "http.response.body", "body": b"{}"})

    gate = AdmissionMiddleware(app, AdmissionSettings(max_queue_ms=0), balance=mine)

    async def call():
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message):
            sent.append(message)

        await gate({"type": "http", "method": "POST", "path": "/predict", "headers": []}, receive, send)
        return dict(sent[0]["headers"])

    assert b"connection" not in asyncio.run(call())  # balanced (both idle)
    mine.observe(5)  # this worker has carried five for a while, the other none
    clock.now += 3 * LOAD_TIME_S
    assert asyncio.run(call()) == {b"content-type": b"json", b"connection": b"close"} and gate.closed == 1
    assert mine.in_flight == 0  # the answer was counted out of the shared slot too


def test_a_single_worker_has_no_balance(tmp_path):
    with pytest.raises(ValueError, match="2 workers"):
        ConnectionBalance(1, 0, tmp_path / "load")
    assert ConnectionBalance.for_this_worker() is None  # not a worker of `bentoml serve`


def test_the_last_worker_to_stop_removes_the_load_file(tmp_path):
    directory = tmp_path / "crlm-ready-1"
    readiness = WorkerReadiness(2, directory)
    readiness.mark_ready()
    ConnectionBalance(2, 0, directory / LOAD_FILE)
    readiness.unmark()
    assert not directory.exists()
