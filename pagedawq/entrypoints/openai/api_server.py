"""``pagedawq serve``: load the engine, then run the OpenAI-compatible app under uvicorn.

fastapi and uvicorn are imported only when the command runs, so ``pagedawq generate`` works
without the ``serve`` extra installed.
"""
from __future__ import annotations

import argparse
import logging
import os

from pagedawq.entrypoints.cli import add_engine_arguments, engine_kwargs

logger = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE = 512


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    add_engine_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", nargs="+", default=None,
                        help="names clients use in 'model' (default: the MODEL argument)")
    parser.add_argument("--api-key", default=os.environ.get("PAGEDAWQ_API_KEY"),
                        help="require 'Authorization: Bearer KEY' on /v1 routes (default: $PAGEDAWQ_API_KEY)")
    parser.add_argument("--max-queue", type=int, default=DEFAULT_MAX_QUEUE,
                        help="accepted requests still waiting for their first token before new ones get 503")
    parser.add_argument("--shutdown-timeout", type=float, default=30.0,
                        help="seconds in-flight requests may take to finish after SIGINT/SIGTERM")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def served_names(args: argparse.Namespace) -> list[str]:
    from pagedawq.models.default_model import DEFAULT_MODEL_NAME
    if args.served_model_name:
        return list(args.served_model_name)
    return [args.model or DEFAULT_MODEL_NAME]


def run_serve(args: argparse.Namespace) -> None:
    try:
        import uvicorn

        from pagedawq.entrypoints.openai.app import build_app
    except ImportError as e:
        raise SystemExit(f"pagedawq serve needs the server extra: pip install 'pagedawq[serve]' ({e})") from e
    from pagedawq.entrypoints.async_engine import AsyncLLMEngine

    if args.max_queue < 1:
        raise SystemExit(f"--max-queue must be >= 1, got {args.max_queue}")
    logging.getLogger().setLevel(args.log_level.upper())
    logger.info("loading %s; the server listens on http://%s:%d once it is ready",
                args.model or "the default model", args.host, args.port)
    engine = AsyncLLMEngine.from_args(args.model, max_queue=args.max_queue, **engine_kwargs(args))
    app = build_app(engine, served_names(args), api_key=args.api_key, drain_timeout=args.shutdown_timeout)
    # uvicorn first waits up to timeout_graceful_shutdown for open requests, then the app's
    # lifespan shutdown aborts whatever is left and stops the engine.
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                    timeout_graceful_shutdown=args.shutdown_timeout)
    finally:
        engine.engine.shutdown()   # idempotent; covers a uvicorn that failed before the lifespan ran
