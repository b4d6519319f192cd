"""The HTTP server against the library: photos per second and latency at 1, 10 and 50 concurrent clients.

Usage::

    python bench/serve.py                                   # 150 aligned Glint crops, SFace, 1/10/50 clients
    python bench/serve.py --photos 300 --clients 1,50

The server is ``qualiface serve --model M`` in a subprocess on 127.0.0.1 (default settings: one worker, a queue
of 64); each client is a thread with one keep-alive ``http.client`` connection posting its share of the photos to
``/embed?aligned=1``. The baseline is the library in one process on the same photos and model: ``load_faces(paths,
aligned=True)`` then ``embed_faces`` (what ``qualiface embed --aligned`` runs). ``--rounds`` rounds each measure
the baseline and every row, in an order rotated by one each round, and each row keeps its best round (the machine
may be shared: the best round is the one least disturbed; the spread of the baseline over the rounds says how
noisy it was). Each row: photos per second, p50 and p99 latency of that round, errors over all rounds (a status
other than 200 or a failed connection), the server process's CPU milliseconds per photo (all its threads; the
library's own is printed too: CPU time is less disturbed by a busy machine than wall time), and the throughput as
a fraction of the best baseline. Results: a Markdown table on stdout and ``bench/results/serve_<date>.json``
(command, date, CPU, load averages, every round).
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from _measure import SFACE, SHARED, cpu_model


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (``/proc/<pid>/stat``), all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _baseline(model: Any, photos: list[Path]) -> tuple[float, float]:
    """Photos per second, and CPU milliseconds per photo, of the library decoding and embedding ``photos`` here."""
    from qualiface.use import embed_faces, load_faces

    cpu, start = _cpu_seconds(os.getpid()), time.perf_counter()
    embed_faces(model, load_faces(photos, aligned=True))
    seconds, cpu = time.perf_counter() - start, _cpu_seconds(os.getpid()) - cpu
    return len(photos) / seconds, 1000 * cpu / len(photos)


def _start_server(model: Path, log: Any) -> tuple[subprocess.Popen[str], int]:
    command = [sys.executable, "-m", "qualiface.cli", "serve", "--model", str(model), "--port", "0"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
    assert server.stdout is not None
    line = server.stdout.readline()  # "serving NAME on http://127.0.0.1:PORT (...)"
    if " on http://" not in line:
        server.kill()
        sys.exit(f"the server did not start: {line!r} (see {log.name})")
    return server, int(line.split(" on http://", 1)[1].split()[0].rsplit(":", 1)[1])


def _load(port: int, server_pid: int, bodies: list[bytes], clients: int) -> dict[str, Any]:
    """Post every body once, spread over ``clients`` threads; wall time, latencies, errors, the server's CPU."""
    latencies: list[float] = []
    errors: list[str] = []
    barrier = threading.Barrier(clients + 1)

    def client(share: list[bytes]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        barrier.wait()
        for body in share:
            start = time.perf_counter()
            try:
                connection.request("POST", "/embed?aligned=1", body=body)
                response = connection.getresponse()
                answer = response.read()
                if response.status != 200:
                    errors.append(f"{response.status} {answer[:200]!r}")
            except (OSError, http.client.HTTPException) as exc:
                errors.append(repr(exc))
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            latencies.append(time.perf_counter() - start)
        connection.close()

    threads = [threading.Thread(target=client, args=(bodies[i::clients],)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    cpu, start = _cpu_seconds(server_pid), time.perf_counter()
    for thread in threads:
        thread.join()
    seconds, cpu = time.perf_counter() - start, _cpu_seconds(server_pid) - cpu
    ms = np.array(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(bodies),
        "seconds": round(seconds, 2),
        "photos_per_s": round(len(bodies) / seconds, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "server_cpu_ms_per_photo": round(1000 * cpu / len(bodies), 1),
        "errors": len(errors),
        "first_errors": errors[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=SFACE)
    parser.add_argument("--photos", type=int, default=150, help="aligned Glint crops, each posted once per row")
    parser.add_argument("--clients", default="1,10,50", help="concurrent clients of each row")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each row keeps its best")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    photos = sorted((SHARED / "glint360k-sample" / "images").rglob("*.jpg"))[: args.photos]
    if len(photos) < args.photos or not args.model.is_file():
        sys.exit(f"needs {args.photos} photos in {SHARED}/glint360k-sample and {args.model}")
    bodies = [p.read_bytes() for p in photos]
    from qualiface.models import load_model
    from qualiface.use import embed_faces, load_faces

    model = load_model(args.model)
    embed_faces(model, load_faces(photos[:4], aligned=True))  # warm-up
    levels = [int(c) for c in args.clients.split(",")]
    load_before = os.getloadavg()
    baselines: list[float] = []
    baseline_cpu: list[float] = []
    rounds: list[list[dict[str, Any]]] = []
    with tempfile.NamedTemporaryFile("w", prefix="serve_bench_", suffix=".log", delete=False) as log:
        server, port = _start_server(args.model, log)
        try:
            _load(port, server.pid, bodies[:4], 1)  # warm-up
            for r in range(args.rounds):
                # each round rotates the order (library first, then 1 client first, ...): no row is always
                # measured at the same moment of a round
                order = [0, *levels][r % (len(levels) + 1) :] + [0, *levels][: r % (len(levels) + 1)]
                measured = {}
                for clients in order:
                    if clients == 0:
                        speed, cpu_ms = _baseline(model, photos)
                        baselines.append(round(speed, 2))
                        baseline_cpu.append(round(cpu_ms, 1))
                    else:
                        measured[clients] = _load(port, server.pid, bodies, clients)
                rounds.append([measured[clients] for clients in levels])
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)
    load_after = os.getloadavg()
    reference = max(baselines)
    rows = []
    for i in range(len(levels)):
        best = dict(max((r[i] for r in rounds), key=lambda row: float(row["photos_per_s"])))
        best["errors"] = sum(r[i]["errors"] for r in rounds)
        best["fraction_of_library"] = round(best["photos_per_s"] / reference, 3)
        rows.append(best)

    date = datetime.datetime.now().isoformat(timespec="seconds")
    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": date,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "model": args.model.name,
        "photos": len(photos),
        "library_photos_per_s": {"best": reference, "rounds": baselines},
        "library_cpu_ms_per_photo": baseline_cpu,
        "load_average_1_5_15": {"before": load_before, "after": load_after},
        "rows": rows,
        "rounds": rounds,
    }
    print(f"{record['command']}\n{date}, {cpu_model()}, {os.cpu_count()} cores, model {args.model.name}")
    print(f"load average before {load_before}, after {load_after}")
    print(f"library in one process: {reference:.2f} photos/s (best of {len(baselines)} rounds: {baselines})")
    print(f"library CPU ms per photo: {baseline_cpu}")
    print(
        "\n| clients | requests | photos/s | of library | p50 ms | p99 ms | server CPU ms/photo | errors (all rounds) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['clients']} | {r['requests']} | {r['photos_per_s']} | {r['fraction_of_library']:.0%} | "
            f"{r['p50_ms']} | {r['p99_ms']} | {r['server_cpu_ms_per_photo']} | {r['errors']} |"
        )
    out = args.out or Path(__file__).parent / "results" / f"serve_{date[:10]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out} (server log: {log.name})")


if __name__ == "__main__":
    main()
