"""The FastAPI application: routes, API-key check, OpenAI-style errors, engine lifespan.

Bodies are read and validated by hand (``model_validate_json``) instead of through FastAPI's body
parameters so that malformed JSON and schema errors both come back as OpenAI's error object with a
400, and so that the raw body never reaches the engine unvalidated.
"""
from __future__ import annotations

import contextlib
import functools
import hmac
import logging
import time
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pagedawq.entrypoints.async_engine import AsyncLLMEngine
from pagedawq.entrypoints.openai.chat import ChatServing
from pagedawq.entrypoints.openai.completions import CompletionServing
from pagedawq.entrypoints.openai.metrics import CONTENT_TYPE, ServerMetrics
from pagedawq.entrypoints.openai.protocol import APIError, ChatCompletionRequest, CompletionRequest, validation_error
from pagedawq.entrypoints.openai.serving import abort_all, engine_error, final_outputs
from pagedawq.entrypoints.openai.sse import ClientDisconnected, SSEResponse, cancel_on_disconnect
from pagedawq.errors import PagedAWQError

logger = logging.getLogger(__name__)

# nginx's convention for "the client went away before the answer": never actually delivered.
CLIENT_CLOSED_REQUEST = 499


def _error_response(err: APIError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


async def _parse(request: Request, model_cls):
    body = await request.body()
    try:
        return model_cls.model_validate_json(body)
    except ValidationError as e:
        if any(err["type"] == "json_invalid" for err in e.errors()):
            raise APIError(400, f"the request body is not valid JSON: {e.errors()[0]['msg']}",
                           code="invalid_json") from e
        if any(err["type"] == "model_type" and not err["loc"] for err in e.errors()):
            raise APIError(400, "the request body must be a JSON object", code="invalid_json") from e
        raise validation_error(e) from e


def build_app(engine: AsyncLLMEngine, served_model_names: list[str], *, api_key: str | None = None,
              drain_timeout: float = 0.0) -> FastAPI:
    """The server around an (unstarted) ``AsyncLLMEngine``; the app's lifespan starts and stops it.

    ``api_key``: when set, every ``/v1`` route needs ``Authorization: Bearer <api_key>``;
    ``/health`` and ``/metrics`` stay open for probes and scrapers. ``drain_timeout``: seconds that
    requests still running at shutdown may take to finish before they are aborted.
    """
    completions = CompletionServing(engine, served_model_names)
    chat = ChatServing(engine, served_model_names)
    metrics = ServerMetrics(engine.stats)
    engine.on_output = metrics.observe
    created = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        logger.info("serving %s", ", ".join(served_model_names))
        try:
            yield
        finally:
            await engine.shutdown(drain_timeout)

    def check_api_key(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise APIError(401, "Incorrect or missing API key; send 'Authorization: Bearer <key>'.",
                           "authentication_error", code="invalid_api_key")

    app = FastAPI(title="pagedawq", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(check_api_key)])

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return _error_response(APIError(exc.status_code, str(exc.detail), kind))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s", request.url.path)
        return _error_response(APIError(500, f"internal error: {type(exc).__name__}", "internal_server_error"))

    async def _answer(request: Request, serving, parsed) -> Any:
        model, request_id, params, streams = serving.prepare(parsed)
        if parsed.stream:
            return SSEResponse(serving.stream(parsed, model, request_id, params, streams),
                               on_close=functools.partial(abort_all, streams))
        try:
            outputs = await cancel_on_disconnect(request, final_outputs(streams))
        except ClientDisconnected:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        except PagedAWQError as e:
            raise engine_error(e) from e
        return JSONResponse(serving.response(parsed, model, request_id, outputs))

    @v1.post("/completions")
    async def create_completion(request: Request):
        return await _answer(request, completions, await _parse(request, CompletionRequest))

    @v1.post("/chat/completions")
    async def create_chat_completion(request: Request):
        return await _answer(request, chat, await _parse(request, ChatCompletionRequest))

    @v1.get("/models")
    async def list_models() -> dict:
        root = str(engine.engine.config.model.path)
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "pagedawq",
                                            "root": root, "max_model_len": engine.max_model_len}
                                           for name in served_model_names]}

    @app.get("/health")
    async def health() -> Response:
        if engine.error is not None:
            return _error_response(APIError(503, f"engine failed: {engine.error}", "service_unavailable_error",
                                            code="engine_dead"))
        if not engine.is_running:
            return _error_response(APIError(503, "engine not running", "service_unavailable_error",
                                            code="engine_not_running"))
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    async def get_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    app.include_router(v1)
    return app
