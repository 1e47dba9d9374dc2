"""Indexing rate and query latency of the elastic shards while they scale and die (issue 8).

One local stack (compose/gnes-swarm.yml as processes, hash encoder, `--shards` indexers) is
loaded with `--docs` documents (default 50,000). Then one writer (calls of `--batch` documents
through the gRPC client, each call one request) and one reader (sequential queries, top_k 10,
for the text of an indexed document) run without a break while the bench:

1. measures the steady state over `--window` seconds;
2. scales the indexers out (`--shards` -> `--scale_to`) and measures from the scale call until
   the middleman has the new shards in its placement, no move under way, and the call has
   returned (the new shards are ready);
3. scales them back in and measures likewise (the call returns once the leaving shards have
   handed over their documents and exited);
4. kills indexer.1 with SIGKILL (the stack's supervisor restarts it after the restart delay of
   the stack file) and measures until the answers are complete again.

Every phase reports the index rate (documents acknowledged per second, by the time a call
returns) and the query p50/p99 (queries started in the window), and their ratios to the
steady state. At the end the shards' document count (STATS) must equal the documents indexed;
the exit status is 1 when it does not, when a complete answer did not have the queried
document first, or when a phase did not settle.

    python bench/elastic.py [--docs 50000] [--shards 2] [--scale_to 3] [--window 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gnes.cli.healthcheck import status_info
from gnes.client import GnesClient
from gnes.proto import pb
from gnes.stack.local import LocalStack, free_port_overrides

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "compose" / "gnes-swarm.yml"
Admin = pb.Request.AdminRequest
TOP_K, HOLD_TIMEOUT, POLL_S = 10, 30, 0.05
# Quiet time between phases, so that one phase's backlog does not count in the next.
GAP_S = 1.0


def text_of(i: int) -> str:
    return f"elastic bench document {i} on subject {i % 97} of kind {i % 13}"


def note(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(slots=True)
class Call:
    began: float
    ended: float
    docs: int
    ok: bool


@dataclass(slots=True)
class Answer:
    began: float
    ended: float
    partial: bool
    answered: int
    expected: int
    ok: bool
    found: bool  # the queried document is the top hit

    @property
    def complete(self) -> bool:
        return self.ok and not self.partial and self.answered == self.expected


class Workload:
    """A writer and a reader, each with its own gRPC channel, running until stop()."""

    def __init__(self, port: int, first_id: int, batch: int) -> None:
        self.port, self.next_id, self.batch = port, first_id, batch
        self.calls: list[Call] = []
        self.answers: list[Answer] = []
        self.errors: list[str] = []
        self.abandoned = 0  # documents of a batch still failing when the writer was stopped
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write), threading.Thread(target=self._read)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(HOLD_TIMEOUT + 30)

    def _write(self) -> None:
        with GnesClient(port=self.port, timeout=HOLD_TIMEOUT + 30) as client:
            while not self._stop.is_set():
                start = self.next_id
                texts = [text_of(i) for i in range(start, start + self.batch)]
                # A failed batch is sent again with the same ids (writes are idempotent by id) until it is
                # acknowledged, so the documents indexed are exactly 0 .. next_id - 1.
                give_up = None
                while True:
                    began = time.monotonic()
                    try:
                        summary = client.index(texts, batch_size=self.batch, start_id=start)
                        error = "; ".join(summary.errors)
                    except Exception as exc:  # noqa: BLE001 - a failed call is a figure, not the end
                        error = f"{type(exc).__name__}: {exc}"
                    ended = time.monotonic()
                    self.calls.append(Call(began, ended, len(texts), not error))
                    if not error:
                        break
                    self.errors.append(f"index call at {began:.2f}: {error[:300]}")
                    if self._stop.is_set():
                        give_up = give_up or ended + HOLD_TIMEOUT
                        if ended > give_up:
                            self.abandoned = len(texts)
                            return
                    time.sleep(0.1)
                self.next_id = start + len(texts)

    def _read(self) -> None:
        rng = np.random.default_rng(1)
        with GnesClient(port=self.port, timeout=HOLD_TIMEOUT) as client:
            while not self._stop.is_set():
                doc_id = int(rng.integers(0, max(self.next_id, 1)))  # acknowledged, so stored
                request = pb.Request()
                request.search.query.raw_text = text_of(doc_id)
                request.search.query.doc_type = pb.Document.TEXT
                request.search.top_k = TOP_K
                began = time.monotonic()
                try:
                    search = client.call(request).search
                    ok = search.status == pb.Response.SUCCESS
                    found = bool(search.topk_results) and search.topk_results[0].doc.doc_id == doc_id
                    answer = (search.partial, search.shards_answered, search.shards_expected)
                except Exception as exc:  # noqa: BLE001
                    self.errors.append(f"query at {began:.2f}: {type(exc).__name__}: {exc}"[:300])
                    ok, found, answer = False, False, (True, 0, 0)
                self.answers.append(Answer(began, time.monotonic(), *answer, ok=ok, found=found))

    def figures(self, t0: float, t1: float) -> dict[str, float]:
        """Index rate by the calls acknowledged in [t0, t1), query latency of the queries started in it."""
        docs = sum(c.docs for c in self.calls if c.ok and t0 <= c.ended < t1)
        overlapping = [c.ended - c.began for c in self.calls if c.began < t1 and c.ended > t0]
        answers = [a for a in self.answers if t0 <= a.began < t1]
        latencies = [a.ended - a.began for a in answers]
        ms = np.array(latencies or [np.nan]) * 1000
        return {
            "seconds": t1 - t0,
            "docs_per_s": docs / (t1 - t0),
            "query_p50_ms": float(np.percentile(ms, 50)),
            "query_p99_ms": float(np.percentile(ms, 99)),
            "queries": len(latencies),
            "longest_index_call_s": max(overlapping, default=0.0),
            # When the last index call begun in the window returned: writes held by a move wait past it.
            "calls_done_s": max((c.ended for c in self.calls if c.began < t1), default=t1) - t0,
            "partial_answers": sum(not a.complete for a in answers),
            # Complete answers whose top hit is not the queried document (the hash encoder maps the
            # same text to the same vector, so it must be): a document missing from the answers.
            "missed": sum(a.complete and not a.found for a in answers),
        }


class Watch:
    """The middleman's status, polled; remembers the most writes it held or queued."""

    def __init__(self, stack: LocalStack) -> None:
        spec = next(s for s in stack.specs if s.service == "middleman-proxy")
        self.host, self.port = spec.ctrl_host, spec.ctrl_port
        self.most_held = self.most_queued = 0

    def info(self) -> dict:
        info = status_info(self.host, self.port, timeout=3)
        if info is None:
            raise RuntimeError("the middleman does not answer on its control port")
        self.most_held = max(self.most_held, sum(info.get("held_writes", {}).values()))
        self.most_queued = max(self.most_queued, int(info.get("queued_writes", 0)))
        return info

    def until_members(self, members: list[str], timeout: float) -> tuple[float, dict]:
        """When the placement is ``members`` with no move under way (monotonic time), and the status."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.info()
            if info["members"] == members and not info["migrating"]:
                return time.monotonic(), info
            if time.monotonic() > deadline:
                raise TimeoutError(f"placement {info['members']} (migrating {info['migrating']}), not {members}")
            time.sleep(POLL_S)


def scale_phase(stack: LocalStack, watch: Watch, load: Workload, replicas: int, timeout: float) -> dict:
    members = [str(i) for i in range(1, replicas + 1)]
    before = watch.info()["migrations"]
    held = load.next_id
    returned: list[float] = []
    failed: list[BaseException] = []

    def scale() -> None:
        try:
            stack.scale("indexer", replicas, stop_grace=timeout)
            returned.append(time.monotonic())
        except BaseException as exc:  # noqa: BLE001 - raised again below, in the bench's thread
            failed.append(exc)

    # The call returns when new shards are ready, or when leaving ones have exited; the middleman is
    # watched meanwhile, for when the new placement is in force.
    caller = threading.Thread(target=scale)
    t0 = time.monotonic()
    caller.start()
    in_force, info = watch.until_members(members, timeout)
    caller.join(timeout)
    if failed:
        raise failed[0]
    if not returned:
        raise TimeoutError(f"the scale call to {replicas} did not return within {timeout:g}s")
    settled = max(in_force, returned[0])
    return dict(
        window=(t0, settled),
        settled_s=settled - t0,
        in_force_s=in_force - t0,
        scale_call_s=returned[0] - t0,
        last_migration_s=float(info["last_migration_s"]),
        migrations=int(info["migrations"]) - before,
        docs_before=held,
    )


def kill_phase(stack: LocalStack, watch: Watch, load: Workload, shards: int, timeout: float) -> dict:
    """Kill indexer.1; wait until a complete answer started after the shard is back in the middleman's view."""
    members = [str(i) for i in range(1, shards + 1)]
    t0 = time.monotonic()
    os.killpg(stack.processes["indexer.1"].pid, signal.SIGKILL)
    deadline = t0 + timeout
    seen_down = back = None
    while back is None:
        info = watch.info()
        now = time.monotonic()
        if seen_down is None and info["shards"] < shards:
            seen_down = now
        if seen_down is not None and info["shards"] == shards and info["members"] == members:
            if not info["held_writes"] and not info["migrating"]:
                back = now
        if now > deadline:
            raise TimeoutError(f"indexer.1 not back within {timeout:g}s: {info}")
        time.sleep(POLL_S)
    # The answers of the reader that prove recovery: the first complete one after the last partial one.
    while True:
        after = [a for a in load.answers if a.began >= back]
        if after and after[-1].complete:
            break
        if time.monotonic() > deadline:
            raise TimeoutError("no complete answer after the shard came back")
        time.sleep(POLL_S)
    answers = [a for a in load.answers if a.ended > t0]
    partial = [a for a in answers if not a.complete]
    first_partial = partial[0].ended - t0 if partial else float("nan")
    if partial:
        recovered = next(a for a in answers if a.began >= partial[-1].ended and a.complete).ended
    else:
        recovered = answers[0].ended
    return dict(
        # The outage: until the answers are complete and the middleman holds no write for the shard.
        window=(t0, max(recovered, back)),
        first_partial_s=first_partial,
        complete_again_s=recovered - t0,
        middleman_saw_down_s=(seen_down - t0) if seen_down is not None else float("nan"),
        middleman_saw_back_s=back - t0,
        restart_delay_s=next(s.restart.delay for s in stack.specs if s.name == "indexer.1"),
    )


def stored_count(client: GnesClient, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return sum(int(s["count"]) for s in client.admin(Admin.STATS)["shards"])
        except Exception:  # a shard just restarted may miss one admin request
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def run(args: argparse.Namespace, workdir: str) -> dict:
    overrides = free_port_overrides(
        INDEXER_REPLICAS=str(args.shards),
        ENCODER_YAML_PATH=str(REPO / "yaml" / "encoder-hash.yml"),
        INDEXER_YAML_PATH=str(REPO / "yaml" / "indexer-hash.yml"),
        HOLD_TIMEOUT=str(HOLD_TIMEOUT),
    )
    port = int(overrides["GRPC_PORT"])
    stack = LocalStack.from_file(
        COMPOSE, workdir=workdir, overrides=overrides, quiet=True, start_timeout=120, output=sys.stderr
    )
    result: dict = {"docs": args.docs, "batch": args.batch, "shards": args.shards, "scale_to": args.scale_to}
    started = time.monotonic()
    with stack:
        watch = Watch(stack)
        watch.until_members([str(i) for i in range(1, args.shards + 1)], 60)
        result["stack_start_s"] = time.monotonic() - started
        note(f"stack up in {result['stack_start_s']:.1f}s; loading {args.docs} documents")
        with GnesClient(port=port, timeout=600) as client:
            client.query(text_of(0), top_k=TOP_K)  # every connection on the way is up
            t = time.monotonic()
            summary = client.index((text_of(i) for i in range(args.docs)), batch_size=args.load_batch)
            result["load_docs_per_s"] = args.docs / (time.monotonic() - t)
            if summary.errors or summary.num_docs != args.docs:
                raise RuntimeError(f"loading failed: {summary.num_docs} documents, errors {summary.errors[:3]}")
        note(f"loaded at {result['load_docs_per_s']:.0f} docs/s; writer and reader start")
        load = Workload(port, args.docs, args.batch)
        load.start()
        failures: list[str] = []
        try:
            time.sleep(GAP_S)  # warm-up
            t0 = time.monotonic()
            time.sleep(args.window)
            result["steady"] = {"window": (t0, time.monotonic())}
            note(f"steady state measured; scaling the indexers {args.shards} -> {args.scale_to}")
            result["scale_out"] = scale_phase(stack, watch, load, args.scale_to, args.timeout)
            note(f"settled after {result['scale_out']['settled_s']:.2f}s; scaling back to {args.shards}")
            time.sleep(GAP_S)
            result["scale_in"] = scale_phase(stack, watch, load, args.shards, args.timeout)
            note(f"settled after {result['scale_in']['settled_s']:.2f}s; killing indexer.1")
            time.sleep(GAP_S)
            result["kill"] = kill_phase(stack, watch, load, args.shards, args.timeout)
            note(f"answers complete again after {result['kill']['complete_again_s']:.2f}s")
            time.sleep(GAP_S)
        except TimeoutError as exc:
            failures.append(f"did not settle: {exc}")
        finally:
            load.stop()
        # Only now: a call still held when its window ended counts as that window's longest call.
        for phase in ("steady", "scale_out", "scale_in", "kill"):
            if phase in result:
                result[phase].update(load.figures(*result[phase].pop("window")))
        result["most_held_writes"], result["most_queued_writes"] = watch.most_held, watch.most_queued
        result["index_errors"] = sum(not c.ok for c in load.calls)
        result["query_errors"] = sum(not a.ok for a in load.answers)
        result["error_samples"] = load.errors[:5]
        result["missed"] = sum(a.complete and not a.found for a in load.answers)
        if result["missed"]:
            failures.append(f"{result['missed']} complete answers did not have the queried document first")
        with GnesClient(port=port, timeout=60) as client:
            watch.until_members([str(i) for i in range(1, args.shards + 1)], args.timeout)
            indexed = load.next_id
            count = stored_count(client)
            # A write acknowledged a moment ago may still be on its way into a shard's store.
            deadline = time.monotonic() + 10
            while count != indexed and time.monotonic() < deadline:
                time.sleep(0.5)
                count = stored_count(client)
        result.update(indexed=indexed, stored=count, abandoned=load.abandoned)
        if count != indexed:
            failures.append(f"the shards hold {count} documents, {indexed} were indexed")
        result["failures"] = failures
        result["total_s"] = time.monotonic() - started
    return result


def report(r: dict) -> None:
    steady = r["steady"]
    print(
        f"{r['docs']} documents loaded before the measurements ({r['load_docs_per_s']:.0f} docs/s, streamed);"
        f" writer: calls of {r['batch']} documents; reader: sequential queries (top_k {TOP_K});"
        f" hash encoder; local stack, {os.cpu_count()} cores; stack up in {r['stack_start_s']:.1f}s"
    )
    header = f"\n{'phase':<24}{'seconds':>8}{'index docs/s':>14}{'query p50 ms':>14}{'query p99 ms':>14}"
    print(header + f"{'queries':>9}{'partial':>9}{'missed':>8}{'longest call s':>16}")
    rows = [
        (f"steady, {r['shards']} shards", "steady"),
        (f"scale-out {r['shards']} -> {r['scale_to']}", "scale_out"),
        (f"scale-in {r['scale_to']} -> {r['shards']}", "scale_in"),
        ("kill -9 indexer.1", "kill"),
    ]
    for label, key in rows:
        if key not in r:
            continue
        f = r[key]
        print(
            f"{label:<24}{f['seconds']:8.2f}{f['docs_per_s']:14.0f}{f['query_p50_ms']:14.2f}{f['query_p99_ms']:14.2f}"
            f"{f['queries']:9d}{f['partial_answers']:9d}{f['missed']:8d}{f['longest_index_call_s']:16.2f}"
        )
        if key != "steady":
            print(
                f"{'  of steady':<24}{'':8}{f['docs_per_s'] / steady['docs_per_s']:14.2f}"
                f"{f['query_p50_ms'] / steady['query_p50_ms']:14.2f}{f['query_p99_ms'] / steady['query_p99_ms']:14.2f}"
            )
    for key, label in (("scale_out", "scale-out"), ("scale_in", "scale-in")):
        if key in r:
            f = r[key]
            print(f"\n{label}, {f['docs_before']} documents held at the scale call:")
            print(f"  settled (in force, and the call back)   {f['settled_s']:8.2f} s after the scale call")
            print(f"  the new placement in force              {f['in_force_s']:8.2f} s")
            print(f"  the scale call returned                 {f['scale_call_s']:8.2f} s")
            print(f"  the index calls begun until then done   {f['calls_done_s']:8.2f} s")
            moves = f"{f['migrations']} move" + ("s; the last one" if f["migrations"] > 1 else "")
            print(f"  middleman last_migration_s              {f['last_migration_s']:8.2f} s ({moves})")
    if "kill" in r:
        k = r["kill"]
        print(f"\nkill -9 indexer.1 (restart delay {k['restart_delay_s']:g} s in the stack file):")
        print(f"  first answer marked partial             {k['first_partial_s']:8.3f} s after the kill")
        print(f"  middleman saw the shard down            {k['middleman_saw_down_s']:8.3f} s")
        print(f"  answers complete again                  {k['complete_again_s']:8.2f} s")
        print(f"  shard back, no write held for it       {k['middleman_saw_back_s']:8.2f} s")
        print(f"  longest index call in the outage        {k['longest_index_call_s']:8.2f} s")
    print(
        f"\nmost writes held for a dead shard {r['most_held_writes']}, most queued during a move"
        f" {r['most_queued_writes']}; failed index calls {r['index_errors']} (resent), failed queries"
        f" {r['query_errors']}"
    )
    for sample in r["error_samples"]:
        print(f"  e.g. {sample}")
    verdict = "ok" if r["stored"] == r["indexed"] else "WRONG"
    print(f"correctness: {r['stored']} documents stored, {r['indexed']} indexed: {verdict}; run {r['total_s']:.0f}s")
    for failure in r["failures"]:
        print(f"FAILED: {failure}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=50_000, help="documents indexed before the measurements")
    parser.add_argument("--shards", type=int, default=2, help="indexers in the steady state")
    parser.add_argument("--scale_to", type=int, default=3, help="indexers after the scale-out")
    parser.add_argument("--batch", type=int, default=200, help="documents per index call of the writer")
    parser.add_argument("--load_batch", type=int, default=1000, help="documents per request while loading")
    parser.add_argument("--window", type=float, default=5.0, help="seconds of the steady-state window")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a phase may take to settle")
    parser.add_argument("--workdir", help="where the stack keeps its logs and shards (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    args = parser.parse_args()
    if args.scale_to <= args.shards:
        parser.error("--scale_to must be more than --shards")
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        result = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="gnes-elastic-") as workdir:
            result = run(args, workdir)
    if args.json:
        print(json.dumps(result))
    else:
        report(result)
    sys.exit(1 if result["failures"] else 0)


if __name__ == "__main__":
    main()
