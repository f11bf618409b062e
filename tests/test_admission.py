"""The admission decision (issue 15), deterministically: a fake clock and injected service times, no server.

A worker admits a request while the wait it can expect (requests in flight x the measured busy time per answer)
stays under the target queue delay (``CRLM_MAX_QUEUE_MS``, by default twice a lone /predict's latency), once
that wait has stood at or above the target for ``OVERLOAD_INTERVAL_S`` (a burst passes), never past the hard
cap (``CRLM_MAX_CONCURRENCY``); a shed request gets 503 + Retry-After before its body is read.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from crlm.serving.admission import (
    AUTO_TARGET_FACTOR,
    OVERLOAD_INTERVAL_S,
    SERVICE_ALPHA,
    AdmissionMiddleware,
    AdmissionSettings,
    QueueDelayBound,
)
from crlm.serving.settings import ServiceSettings, SettingsError

STOOD = 1.5 * OVERLOAD_INTERVAL_S  # a queue that has stood for longer than the interval


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lone(bound: QueueDelayBound, clock: Clock, seconds: float, route_sample: bool = True) -> None:
    """One request answered by an idle worker in ``seconds``."""
    token = bound.admitted()
    clock.now += seconds
    bound.answered(token, route_sample)


def fill(bound: QueueDelayBound, clock: Clock) -> int:
    """Admit one request at a time, each once the queue ahead of it has stood for ``OVERLOAD_INTERVAL_S``, until
    one is refused; returns how many are in flight then."""
    while True:
        bound.refusal()  # the queue as it stands now starts the interval
        clock.now += STOOD
        if bound.refusal() is not None:
            return bound.in_flight
        bound.admitted()


def test_before_any_measurement_the_cap_alone_decides():
    clock = Clock()
    bound = QueueDelayBound(AdmissionSettings(max_concurrency=5), clock)
    assert bound.target_s() is None and fill(bound, clock) == 5
    assert "CRLM_MAX_CONCURRENCY" in bound.refusal()


def test_the_automatic_target_is_twice_a_lone_answer_and_the_wait_is_in_flight_times_service_time():
    clock = Clock()
    bound = QueueDelayBound(AdmissionSettings(max_concurrency=8), clock)
    lone(bound, clock, 0.010)
    assert bound.lone_s == pytest.approx(0.010) and bound.service_s == pytest.approx(0.010)
    assert bound.target_s() == pytest.approx(AUTO_TARGET_FACTOR * 0.010)
    # 0 in flight: admitted; 1 x 10 ms < 20 ms: admitted; 2 x 10 ms reaches 20 ms for 100 ms: shed
    assert fill(bound, clock) == 2
    assert bound.expected_wait_s() == pytest.approx(0.020)
    assert "CRLM_MAX_QUEUE_MS" in bound.refusal() and "2 in flight" in bound.refusal()


def test_a_fixed_target_in_milliseconds_and_zero_for_none():
    clock = Clock()
    bound = QueueDelayBound(AdmissionSettings(max_concurrency=8, max_queue_ms=35), clock)
    lone(bound, clock, 0.010)
    assert bound.target_s() == pytest.approx(0.035) and fill(bound, clock) == 4  # 3 x 10 ms < 35 ms <= 4 x 10 ms
    clock = Clock()
    bound = QueueDelayBound(AdmissionSettings(max_concurrency=6, max_queue_ms=0), clock)
    lone(bound, clock, 0.010)
    assert bound.target_s() is None and fill(bound, clock) == 6


def test_a_burst_is_admitted_and_a_standing_queue_is_shed_until_the_worker_catches_up():
    clock = Clock()
    bound = QueueDelayBound(AdmissionSettings(max_concurrency=8), clock)
    lone(bound, clock, 0.010)  # target 20 ms, 10 ms per answer
    for _ in range(8):  # eight at once at an idle worker: all admitted (the cap, not the target, is the limit)
        assert bound.refusal() is None
        bound.admitted()
    assert "CRLM_MAX_CONCURRENCY" in bound.refusal() and not bound.overloaded
    clock.now += OVERLOAD_INTERVAL_S / 2
    for _ in range(6):  # answered in time: under the target again
        bound.answered((clock.now, False), False)
    assert bound.in_flight == 2 and bound.refusal() is None and not bound.overloaded  # 2 x ~9 ms: under
    bound.admitted()  # 3 in flight: the wait stands at or above the target ...
    assert bound.refusal() is None
    clock.now += STOOD  # ... for the whole interval: overloaded, the next one is shed
    assert "CRLM_MAX_QUEUE_MS" in bound.refusal() and bound.overloaded
    bound.answered((clock.now, False), False)  # 2 in flight x 10 ms: still at the target: shed
    assert bound.refusal() is not None
    bound.answered((clock.now, False), False)  # 1 in flight: under the target, admitted (still overloaded)
    assert bound.refusal() is None and bound.overloaded
    bound.answered((clock.now, False), False)
    assert bound.in_flight == 0 and bound.refusal() is None and not bound.overloaded  # idle: the state ends


def test_idle_time_is_not_service_time():
    clock = Clock()
    bound = QueueDelayBound(AdmissionSettings(), clock)
    lone(bound, clock, 0.010)
    clock.now += 5.0  # nothing in flight for five seconds
    lone(bound, clock, 0.010)
    assert bound.service_s == pytest.approx(0.010) and bound.lone_s == pytest.approx(0.010)


def test_a_batch_answered_together_lowers_the_service_time_per_answer():
    clock = Clock()
    bound = QueueDelayBound(AdmissionSettings(max_concurrency=8, max_queue_ms=1000), clock)
    lone(bound, clock, 0.012)
    tokens = [bound.admitted() for _ in range(4)]
    clock.now += 0.016  # one micro-batch of four: 16 ms of busy time, four answers
    for token in tokens:
        bound.answered(token, True)
    expected = 0.012
    for sample in (0.016, 0.0, 0.0, 0.0):  # the first answer carries the batch's busy time, the others none
        expected += SERVICE_ALPHA * (sample - expected)
    assert bound.service_s == pytest.approx(expected) and bound.service_s < 0.012
    assert bound.lone_s == pytest.approx(0.012 + 0.1 * (0.016 - 0.012))  # the first found the worker idle
    assert bound.in_flight == 0


def test_only_a_lone_model_answer_sets_the_target():
    clock = Clock()
    bound = QueueDelayBound(AdmissionSettings(), clock)
    lone(bound, clock, 0.010)
    lone(bound, clock, 0.0005, route_sample=False)  # a quick 422, or /scores: not an unloaded model answer
    assert bound.lone_s == pytest.approx(0.010)
    token = bound.admitted()
    other = bound.admitted()  # admitted while the worker was busy: not lone
    clock.now += 0.050
    bound.answered(other, True)
    bound.answered(token, True)
    assert bound.lone_s == pytest.approx(0.010 + 0.1 * (0.050 - 0.010))  # the first one only (it found it idle)


def test_the_setting_is_validated_at_start():
    assert ServiceSettings.parse({}).max_queue_ms is None
    assert ServiceSettings.parse({"CRLM_MAX_QUEUE_MS": "auto"}).max_queue_ms is None
    assert ServiceSettings.parse({"CRLM_MAX_QUEUE_MS": "0"}).max_queue_ms == 0
    assert ServiceSettings.parse({"CRLM_MAX_QUEUE_MS": " 40 "}).max_queue_ms == 40
    for bad in ("-1", "2.5", "40ms"):
        with pytest.raises(SettingsError, match="CRLM_MAX_QUEUE_MS"):
            ServiceSettings.parse({"CRLM_MAX_QUEUE_MS": bad})


def test_past_the_expected_wait_target_a_request_gets_503_and_retry_after_without_its_body_being_read():
    clock = Clock()
    release = asyncio.Event()
    held = []

    async def app(scope, receive, send):
        message = await receive()
        if message["body"] == b"hold":
            held.append(1)
            await release.wait()
        else:
            clock.now += 0.010  # a lone answer takes 10 ms of the fake clock
        status = 422 if message["body"] == b"bad" else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    gate = AdmissionMiddleware(app, AdmissionSettings(max_concurrency=8, retry_after_s=2), clock=clock)

    async def call(body=b"{}", path="/predict", method="POST"):
        sent, reads = [], []

        async def receive():
            reads.append(1)
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            sent.append(message)

        await gate({"type": "http", "method": method, "path": path, "headers": []}, receive, send)
        return sent, reads

    async def run():
        first, _ = await call()  # lone: 10 ms -> the target is 20 ms, the service time 10 ms per answer
        bad, _ = await call(b"bad")  # a 422 is not a lone model answer: the target stays
        holders = [asyncio.create_task(call(b"hold")) for _ in range(3)]
        while len(held) < 3:
            await asyncio.sleep(0)
        burst = await call()  # 3 in flight x 10 ms is past the 20 ms target: a burst so far, admitted
        clock.now += STOOD  # the queue has stood past the target for the interval
        shed = await call()
        target = gate.bound.target_s()
        probe = await call(path="/readyz", method="GET")  # probes are never shed
        release.set()
        return first, bad, burst, shed, probe, target, await asyncio.gather(*holders)

    first, bad, burst, (shed, reads), probe, target, holders = asyncio.run(run())
    assert first[0]["status"] == 200 and bad[0]["status"] == 422 and burst[0][0]["status"] == 200
    assert shed[0]["status"] == 503 and reads == []  # refused before a byte of the body
    assert (b"retry-after", b"2") in shed[0]["headers"]
    assert "CRLM_MAX_QUEUE_MS" in json.loads(shed[1]["body"])["errors"][0]["rule"]
    assert probe[0][0]["status"] == 200 and [h[0][0]["status"] for h in holders] == [200] * 3
    assert target == pytest.approx(0.020) and gate.in_flight == 0 and gate.shed == 1
