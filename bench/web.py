"""Benchmark: the site and API under load (wrk, 50 connections, 30 s, loopback only).

Seeds a Cassandra node of its own with 10,000 users, 20,000 releases and one published run of
recommendations and profiles, serves them with ``discorecs web`` (gunicorn), and drives the
recommendations API and the user page with wrk over random user ids. Reports requests/s,
p50/p99 latency and errors. Target: >= 1,000 requests/s on the API with p99 < 50 ms and no
errors, with Cassandra on the same 2-core machine.

    .venv/bin/python -m bench.web [--seconds 30] [--connections 50] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from bench.common import free_port, write_results
from discorecs import tables
from discorecs.cassandra import apply_schema, connect, upsert_rows
from discorecs.services.cassandra_node import CassandraNode
from discorecs.settings import load_settings

USERS, RELEASES, RUN = 10_000, 20_000, "20261125T030000Z-bench"
LUA = """
request = function()
  return wrk.format("GET", string.format("{path}", math.random(1, {users})))
end
"""


def seed(settings) -> None:
    rng = random.Random(7)
    now = datetime.now(UTC)
    genres = ["Jazz", "Rock", "Electronic", "Funk / Soul", "Pop"]
    with connect(settings, keyspace=settings.cassandra_keyspace) as c:
        upsert_rows(
            c,
            tables.USERS,
            ("user_id", "name", "location", "joined_at"),
            [(u, f"Collector {u}", "Berlin, Germany", now) for u in range(1, USERS + 1)],
            concurrency=128,
        )
        upsert_rows(
            c,
            tables.RELEASES,
            ("release_id", "title", "artists", "genres", "styles", "year", "country", "formats"),
            [
                (
                    r,
                    f"Record {r}",
                    [f"Artist {r % 997}"],
                    [rng.choice(genres)],
                    ["House"],
                    1970 + r % 50,
                    "UK",
                    ["Vinyl"],
                )
                for r in range(1, RELEASES + 1)
            ],
            concurrency=128,
        )
        upsert_rows(
            c,
            tables.USER_GENRE_PROFILES,
            (
                "user_id",
                "run_id",
                "collection_size",
                "scores",
                "shares",
                "ranks",
                "percentiles",
                "top_styles",
            ),
            [
                (
                    u,
                    RUN,
                    40,
                    {g: 8.0 for g in genres},
                    {g: 0.2 for g in genres},
                    {g: u for g in genres},
                    {g: 50.0 for g in genres},
                    ["House"],
                )
                for u in range(1, USERS + 1)
            ],
            concurrency=128,
        )
        upsert_rows(
            c,
            tables.RECOMMENDATIONS,
            tables.RECOMMENDATION_COLUMNS,
            [
                (
                    u,
                    RUN,
                    u % USERS + 1,
                    0.9,
                    "you both collect Jazz, 90% taste match",
                    ["Jazz"],
                    [rng.randint(1, USERS) for _ in range(4)],
                    [0.8] * 4,
                    [rng.randint(1, RELEASES) for _ in range(10)],
                    [0.1] * 10,
                    ["popular among House collectors like you"] * 10,
                    now,
                )
                for u in range(1, USERS + 1)
            ],
            concurrency=128,
        )
        upsert_rows(
            c,
            tables.COLLECTIONS,
            ("user_id", "release_id", "added_at"),
            [(u, rng.randint(1, RELEASES), now) for u in range(1, USERS + 1) for _ in range(5)],
            concurrency=128,
        )
        upsert_rows(
            c, tables.PUBLISHED_RUNS, ("scope", "run_id", "published_at"), [("nightly", RUN, now)]
        )


def run_wrk(url: str, path: str, seconds: int, connections: int, work: Path) -> dict:
    script = work / f"{abs(hash(path))}.lua"
    script.write_text(LUA.replace("{path}", path).replace("{users}", str(USERS)))
    result = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )
    out = result.stdout

    def latency(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)$", out, re.M)
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "path": path,
        "requests_per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "latency_ms": {"p50": latency("50"), "p90": latency("90"), "p99": latency("99")},
        "socket_errors": errors,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "seconds": seconds,
        "connections": connections,
        "wrk_output": out,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="discorecs-bench-web-"))
    settings = load_settings(
        {
            "DISCORECS_HOME": str(work),
            "DISCORECS_CASSANDRA_PORT": str(free_port()),
            "DISCORECS_CASSANDRA_STORAGE_PORT": str(free_port()),
            "DISCORECS_CASSANDRA_MAX_HEAP": "1G",
            "DISCORECS_WEB_PORT": str(free_port()),
        }
    )
    node = CassandraNode(settings)
    server = None
    try:
        node.start()
        apply_schema(settings)
        print("seeding Cassandra ...", flush=True)
        seed(settings)
        env = {
            **os.environ,
            "DISCORECS_HOME": str(work),
            "DISCORECS_CASSANDRA_PORT": str(settings.cassandra_port),
        }
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "discorecs.cli",
                "web",
                "--port",
                str(settings.web_port),
                "--workers",
                str(args.workers),
                "--threads",
                str(args.threads),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{settings.web_port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "/api/users/1/recommendations", timeout=2).read()
                break
            except OSError:
                time.sleep(0.3)
        results = {}
        for name, path in (
            ("api_recommendations", "/api/users/%d/recommendations"),
            ("user_page", "/users/%d"),
        ):
            run_wrk(url, path, 5, args.connections, work)  # warm-up: connections, statements
            results[name] = run_wrk(url, path, args.seconds, args.connections, work)
            r = results[name]
            print(
                f"{name:20s} {r['requests_per_second']:8,.0f} req/s  p50 "
                f"{r['latency_ms']['p50']:.1f} ms  p99 {r['latency_ms']['p99']:.1f} ms  "
                f"errors {r['socket_errors'] + r['non_2xx']}",
                flush=True,
            )
        figures = {
            "gunicorn_workers": args.workers,
            "threads": args.threads,
            **results,
            "targets": {"api_requests_per_second": 1000, "api_p99_ms": 50, "errors": 0},
        }
        print(f"written to {write_results('web', figures)}")
    finally:
        if server:
            server.terminate()
            server.wait(timeout=20)
        node.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
