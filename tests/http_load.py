"""A small HTTP/1.1 load generator for tests/test_http_load.py, run as its own process.

`python tests/http_load.py --port P --concurrency 8 --count 3000` posts the same /embed body
over keep-alive connections and prints one JSON object: the count per status and client-side
latencies per status (ms). Raw asyncio streams, not an HTTP library: the client's own overhead
would otherwise dominate the milliseconds it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time


def _request(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def _worker(args: argparse.Namespace, raw: bytes, left: list[int], out: dict[str, list[float]]) -> None:
    reader, writer = await asyncio.open_connection(args.host, args.port)
    deadline = time.monotonic() + args.duration_s
    try:
        while left[0] > 0 and time.monotonic() < deadline:
            left[0] -= 1
            t0 = time.perf_counter()
            try:
                writer.write(raw)
                status = await asyncio.wait_for(_read_response(reader), args.timeout_s)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                out.setdefault("errors", []).append(0.0)
                print(f"request failed: {exc!r}", file=sys.stderr)
                writer.close()
                reader, writer = await asyncio.open_connection(args.host, args.port)
                continue
            out.setdefault(str(status), []).append((time.perf_counter() - t0) * 1000)
    finally:
        writer.close()


def _summary(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))]  # noqa: E731
    return {"n": len(s), "p50": pick(0.5), "p99": pick(0.99), "max": s[-1]}


async def _main(args: argparse.Namespace) -> dict[str, object]:
    raw = _request(args.host, args.port, args.path, json.dumps({"sentences": [args.text]}).encode())
    left, out = [args.count], {}
    started = time.perf_counter()
    await asyncio.gather(*(_worker(args, raw, left, out) for _ in range(args.concurrency)))
    return {
        "elapsed_s": time.perf_counter() - started,
        "counts": {k: len(v) for k, v in out.items()},
        "latency_ms": {k: _summary(v) for k, v in out.items() if k != "errors"},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/embed")
    p.add_argument("--text", default="load test sentence")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--count", type=int, default=1000, help="requests in all")
    p.add_argument("--duration_s", type=float, default=30.0, help="stop sending after this long")
    p.add_argument("--timeout_s", type=float, default=20.0, help="one request's longest wait")
    print(json.dumps(asyncio.run(_main(p.parse_args()))))


if __name__ == "__main__":
    main()
