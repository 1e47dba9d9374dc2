"""`gnes model add|list|status|remove|import-index` and `gnes eval`: clients of the HTTP service's
model admin (gnes/http/models_api.py), which runs the controller next to the pipeline."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("model", help="add, list, inspect and remove named models of a running deployment")
    _http_flags(p)
    msub = p.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    a = msub.add_parser("add", help="start a named model's encoders; returns once it answers")
    a.add_argument("name", help="the model's name (also the name of its logical index)")
    src = a.add_mutually_exclusive_group(required=True)
    src.add_argument("--path", help="a local sentence-transformers model directory")
    src.add_argument("--plugin", help="a Python file defining get_embed_fn()")
    src.add_argument("--package", help="an importable package defining get_embed_fn()")
    a.add_argument("--replicas", type=int, default=1, help="encoder replicas of the model")
    msub.add_parser("list", help="the named models and their services")
    s = msub.add_parser("status", help="one model: services, dimension, whether it answers")
    s.add_argument("name")
    r = msub.add_parser("remove", help="stop a model's encoders (its index and documents are kept)")
    r.add_argument("name")
    i = msub.add_parser("import-index", help="load a faiss index file and its id map as a logical index")
    i.add_argument("name", help="the logical index to create")
    i.add_argument("--faiss", required=True, help="the faiss index file (faiss.write_index)")
    i.add_argument("--map", required=True, help="faiss id -> document id: JSON (list or object) or CSV")
    i.add_argument("--model", default="default", help="the model whose queries search it (its dimension is checked)")
    i.add_argument("--metric", default="", help="ip or l2: checked against the index's own metric")

    e = subparsers.add_parser("eval", help="score every served model on Lee et al. 2005 (Pearson, nDCG@10)")
    _http_flags(e)
    e.add_argument("--models", default="", help="comma-separated model names (default: default and every named one)")
    e.add_argument("--chart", default="", help="also write a bar chart (PNG) to this file (needs matplotlib)")
    e.add_argument("--json", action="store_true", help="print the scores as one JSON line")


def _http_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--http", default=os.environ.get("GNES_HTTP", "http://127.0.0.1:8080"), help="the HTTP service")
    p.add_argument("--token", default=os.environ.get("GNES_TOKEN", ""), help="an admin token ($GNES_TOKEN)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for an answer")


def client(args: argparse.Namespace) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    return httpx.Client(base_url=args.http, headers=headers, timeout=args.timeout)


def _answer(response: Any) -> dict[str, Any]:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        raise RuntimeError(f"{response.status_code}: {detail}")
    return dict(response.json())


def run(args: argparse.Namespace) -> int:
    try:
        if args.command == "eval":
            from .evaluate import run_eval

            return run_eval(args)
        with client(args) as http:
            action = args.model_command
            if action == "add":
                body = {"name": args.name, "replicas": args.replicas}
                body.update({k: getattr(args, k) for k in ("path", "plugin", "package") if getattr(args, k)})
                info = _answer(http.post("/models", json=body))
                print(f"model {info['name']}: {info['dim']} dimensions, answering after {info['answers_after_s']:.1f}s")
            elif action == "list":
                info = _answer(http.get("/models"))
                for name, model in sorted(info["models"].items()):
                    print(f"{name}: {model.get('replicas', 0)} replica(s), dim {model.get('dim') or '?'}")
            elif action == "status":
                print(json.dumps(_answer(http.get(f"/models/{args.name}")), indent=2))
            elif action == "remove":
                _answer(http.delete(f"/models/{args.name}"))
                print(f"model {args.name} removed (its index {args.name} is kept)")
            else:
                body = {"name": args.name, "faiss_path": args.faiss, "map_path": args.map, "model": args.model}
                if args.metric:
                    body["metric"] = args.metric
                info = _answer(http.post("/indexes/import", json=body))
                print(f"index {info['name']}: {info['count']} vectors of {info['dim']} dimensions ({info['metric']})")
    except (RuntimeError, OSError, ValueError) as exc:
        print(f"gnes {args.command}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # httpx's transport errors: the service is not there
        print(f"gnes {args.command}: cannot reach {args.http}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
