"""Reliability benchmark: a bounded open-loop load on a real server, below and past its capacity.

Starts ``bentoml serve`` on 127.0.0.1 (the bundles in ``models/``, or small coxnet models trained into a
temporary directory), then:
1. the unloaded latency: ``--unloaded`` sequential /predict requests (p50, p99);
2. the sustainable rate: the throughput of a closed loop of ``--concurrency`` clients;
3. for each multiple of that rate (``--multiples``, default 0.5, 1 and 2), an open loop: requests are sent on a
   fixed schedule for ``--seconds`` whatever the answers (as real clients do), each with a 60 s timeout.
For each rate it prints the requests sent, answered (200), shed (503 with Retry-After), other errors, p50/p99
of the answered and p99 of the shed, the answers per second, the server's resident memory (all its processes) at
the start, the middle and the end of the run, and the CPU the server (all its processes) and this load generator
used during the run, in % of one core (a worker at 100% is saturated, whatever the rate). Nothing is asserted;
the summary states the issue's criteria at 2x (shed in under 100 ms, answered p99 within 3x the unloaded p99, no
other errors, memory flat) with the figures.

Usage: ``.venv/bin/python benchmarks/load.py [--seconds 20] [--multiples 0.5 1 2] [--workers N]
[--max-concurrency N] [--max-queue-ms auto|0|MS] [--rate R] [--models-dir DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from raw_http import RawClient, json_bodies
from serving import bundles_or_small, patients, server

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _tree(pid: int, read) -> float:
    """The sum of ``read(proc directory, stat fields)`` over a process and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    value: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            value[int(entry.name)] = read(entry, fields)
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += value.get(p, 0.0)
        todo.extend(children.get(p, []))
    return total


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (MB)."""
    def rss_kb(entry: Path, _) -> float:
        lines = (entry / "status").read_text().splitlines()
        return next((int(line.split()[1]) for line in lines if line.startswith("VmRSS:")), 0)

    return _tree(pid, rss_kb) / 1024


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process and all its living descendants have used."""
    return _tree(pid, lambda _, fields: (int(fields[11]) + int(fields[12])) / TICKS_PER_S)


def own_cpu_s() -> float:
    """CPU seconds this process (the load generator) has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def ms(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q)) if values else float("nan")


async def open_loop(url: str, sample: list[dict], rate: float, seconds: float, pid: int) -> dict:
    """Requests at a fixed rate for ``seconds`` (open loop: the schedule ignores the answers)."""
    client = RawClient.for_url(url, json_bodies("patient", sample))
    n = max(1, int(rate * seconds))
    results: list[tuple[int | str, float]] = []
    rss = {"start": tree_rss_mb(pid)}
    cpu = (tree_cpu_s(pid), own_cpu_s(), time.perf_counter())

    async def one(i: int, scheduled: float) -> None:
        try:
            status, headers, _ = await asyncio.wait_for(client.post(i), 60)
            label: int | str = status
            if status == 503 and "retry-after" not in headers:
                label = "503 without Retry-After"
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as err:
            label = type(err).__name__
        results.append((label, time.perf_counter() - scheduled))  # from the scheduled send: client lag counts

    started = time.perf_counter()
    tasks = []
    for i in range(n):
        scheduled = started + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
        if i == n // 2:
            rss["middle"] = tree_rss_mb(pid)
    await asyncio.gather(*tasks)
    client.close()
    rss["end"] = tree_rss_mb(pid)
    wall = time.perf_counter() - cpu[2]
    busy = {"server": (tree_cpu_s(pid) - cpu[0]) / wall, "client": (own_cpu_s() - cpu[1]) / wall}
    counts = Counter(status for status, _ in results)
    answered = [t for status, t in results if status == 200]
    shed = [t for status, t in results if status == 503]
    lag = max(0.0, time.perf_counter() - started - seconds)
    return {"rate": rate, "sent": n, "counts": counts, "answered": answered, "shed": shed, "rss": rss,
            "drain_s": lag, "busy": busy}


def closed_loop_rate(url: str, sample: list[dict], concurrency: int, n: int) -> float:
    """Answers per second of ``concurrency`` clients sending back to back (the sustainable rate)."""

    async def run() -> float:
        client = RawClient.for_url(url, json_bodies("patient", sample))
        counter = iter(range(n))
        answered = 0

        async def worker() -> None:
            nonlocal answered
            for i in counter:
                status, _, _ = await client.post(i)
                assert status in (200, 503), status
                answered += status == 200
                if status == 503:  # more clients than the server's bound (CRLM_MAX_CONCURRENCY): back off
                    await asyncio.sleep(0.01)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        client.close()
        return answered / (time.perf_counter() - t0)

    return asyncio.run(run())


def unloaded(url: str, sample: list[dict], n: int) -> list[float]:
    """Latencies of ``n`` sequential requests (one connection)."""

    async def run() -> list[float]:
        client = RawClient.for_url(url, json_bodies("patient", sample))
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            status, _, _ = await client.post(i)
            assert status == 200, status
            times.append(time.perf_counter() - t0)
        client.close()
        return times

    return asyncio.run(run())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each open-loop run")
    parser.add_argument("--multiples", type=float, nargs="+", default=[0.5, 1.0, 2.0],
                        help="rates as multiples of the sustainable rate")
    parser.add_argument("--unloaded", type=int, default=200, help="sequential requests for the unloaded p99")
    parser.add_argument("--concurrency", type=int, default=8, help="closed-loop clients for the sustainable rate")
    parser.add_argument("--workers", type=int, default=1,
                        help="server workers (default 1: on a 2-core machine the client needs the other core)")
    parser.add_argument("--max-concurrency", type=int, default=None, help="CRLM_MAX_CONCURRENCY of the server")
    parser.add_argument("--max-queue-ms", default=None, help="CRLM_MAX_QUEUE_MS of the server (auto, 0, ms)")
    parser.add_argument("--rate", type=float, default=None,
                        help="the base rate (req/s) instead of the measured sustainable one: compares settings "
                             "at the same offered load (the closed loop's rate depends on the shedding rule)")
    parser.add_argument("--models-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    os.environ["BENTOML_DO_NOT_TRACK"] = "True"

    models_dir, tmp = bundles_or_small(args.models_dir)
    sample = patients(500)
    env = {"CRLM_MAX_CONCURRENCY": str(args.max_concurrency)} if args.max_concurrency else {}
    if args.max_queue_ms is not None:
        env["CRLM_MAX_QUEUE_MS"] = str(args.max_queue_ms)
    print(f"models: {models_dir}; {args.workers} worker(s); {os.cpu_count()} CPUs; load average "
          f"{os.getloadavg()[0]:.2f}; server env {env or '(defaults)'}", flush=True)
    with server(models_dir, args.workers, env) as (url, proc):
        unloaded(url, sample, 20)  # warm-up
        base = unloaded(url, sample, args.unloaded)
        capacity = closed_loop_rate(url, sample, args.concurrency, max(200, args.unloaded))
        print(f"unloaded /predict: p50 {ms(base, 50):.1f} ms, p99 {ms(base, 99):.1f} ms ({len(base)} sequential); "
              f"sustainable rate {capacity:.1f} req/s (closed loop, {args.concurrency} clients)", flush=True)
        if args.rate:
            capacity = args.rate
            print(f"base rate {capacity:.1f} req/s (--rate)", flush=True)
        print(flush=True)
        runs = [asyncio.run(open_loop(url, sample, m * capacity, args.seconds, proc.pid)) for m in args.multiples]

    print(f"{'rate':>14}{'sent':>7}{'200':>7}{'503':>7}{'other':>7}{'p50 ms':>9}{'p99 ms':>9}{'shed p99':>10}"
          f"{'200/s':>8}{'RSS MB start/middle/end':>26}{'CPU server/client':>19}")
    for m, r in zip(args.multiples, runs, strict=True):
        other = sum(n for status, n in r["counts"].items() if status not in (200, 503))
        rss = r["rss"]
        print(f"{m:>4.1f}x {r['rate']:>5.1f}/s{r['sent']:>7}{r['counts'][200]:>7}{r['counts'][503]:>7}{other:>7}"
              f"{ms(r['answered'], 50):>9.1f}{ms(r['answered'], 99):>9.1f}{ms(r['shed'], 99):>10.1f}"
              f"{r['counts'][200] / args.seconds:>8.1f}"
              f"{rss['start']:>10.0f}/{rss.get('middle', float('nan')):.0f}/{rss['end']:.0f}"
              f"{100 * r['busy']['server']:>11.0f}%/{100 * r['busy']['client']:.0f}%")
        if other:
            print(f"      other answers: {dict((k, v) for k, v in r['counts'].items() if k not in (200, 503))}")
    top = runs[-1]
    ratio = ms(top["answered"], 99) / ms(base, 99)
    print(f"\nat {args.multiples[-1]}x: shed p99 {ms(top['shed'], 99):.1f} ms (criterion < 100 ms); answered p99 / "
          f"unloaded p99 = {ratio:.2f} (criterion <= 3); other errors "
          f"{sum(n for s, n in top['counts'].items() if s not in (200, 503))} (criterion 0); RSS "
          f"{top['rss']['start']:.0f} -> {top['rss']['end']:.0f} MB")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
