"""The agent's HTTP API: OpenAI-compatible endpoints in front of the model host, plus health and metrics.

`create_app` holds the whole route table. Requests are translated by the pure functions in
`translate`, queued by `Admission`, generated on worker threads (`Job`), and every error becomes an
OpenAI-style body in one place, `error_response`. A body over `api.max_body_bytes` (by default sized
to the served model's context window) gets 413 before it is read in full; a full queue gets 429
before the prompt is tokenized; a client that hangs up while queued gives its place up. With an API
key set, the OpenAPI document and its pages are not served. Model names: `name`, `name@version`, and
`name:adapter` (or `name@version:adapter`) to pick a LoRA adapter of the bundle for one request.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge_agent import __version__
from edge_agent.errors import (
    ClientGoneError,
    ContextLengthError,
    NotReadyError,
    OverloadedError,
    RequestError,
    RequestTooLargeError,
    SlmopsError,
    UnknownAdapterError,
    UnknownModelError,
)
from edge_agent.runtime import LoadedModel
from edge_agent.serving import translate
from edge_agent.serving.admission import Admission
from edge_agent.serving.jobs import Job
from edge_agent.serving.metrics import ApiMetrics
from edge_agent.serving.model_host import Lease, ModelHost
from edge_agent.serving.openai_types import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    ErrorBody,
    ModelCard,
    ModelList,
)
from edge_agent.serving.settings import ApiSettings

log = logging.getLogger("edge_agent.serving")

BODY_BYTES_PER_TOKEN = 32  # room for JSON escapes and several messages per token of context
BODY_OVERHEAD = 64 << 10
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}

ENDPOINTS = frozenset(
    {"/v1/models", "/v1/chat/completions", "/v1/completions", "/healthz", "/readyz", "/status", "/metrics"}
)
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "bad request (parameters, context too long)",
        401: "missing or wrong API key",
        404: "unknown model or adapter",
        413: "request body too large (api.max_body_bytes)",
        429: "queue full; see Retry-After",
        503: "no model loaded yet; see Retry-After",
    }.items()
}
_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}, "description": "JSON, or SSE"}
}


class _AuthError(Exception):
    pass


def error_response(exc: BaseException) -> JSONResponse:
    """The one place errors become HTTP statuses and OpenAI-style bodies."""
    headers: dict[str, str] = {}
    param = getattr(exc, "param", None)
    code: str | None = None
    kind = "invalid_request_error"
    message = str(exc)
    if isinstance(exc, OverloadedError):
        status, kind, code = 429, "rate_limit_error", "rate_limit_exceeded"
        headers["Retry-After"] = str(exc.retry_after_s)
    elif isinstance(exc, NotReadyError):
        status, kind, code = 503, "server_error", "model_not_ready"
        headers["Retry-After"] = str(exc.retry_after_s)
    elif isinstance(exc, UnknownModelError):
        status, code = 404, "model_not_found"
    elif isinstance(exc, UnknownAdapterError):
        status, code = 404, "adapter_not_found"
    elif isinstance(exc, ContextLengthError):
        status, code = 400, "context_length_exceeded"
    elif isinstance(exc, RequestTooLargeError):
        status, code = 413, "request_too_large"
    elif isinstance(exc, ClientGoneError):
        status, code = 499, "client_closed_request"
    elif isinstance(exc, RequestError):
        status, code = 400, "invalid_value"
    elif isinstance(exc, _AuthError):
        status, code = 401, "invalid_api_key"
        headers["WWW-Authenticate"] = "Bearer"
    elif isinstance(exc, RequestValidationError):
        status, code = 400, "invalid_value"
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":  # its loc is a character offset, not a field
            code, param = "invalid_json", None
            message = f"the request body is not valid JSON: {first.get('ctx', {}).get('error', 'invalid')}"
        else:
            loc = [str(p) for p in first.get("loc", ()) if p != "body"]
            param = ".".join(loc) or None
            message = f"{param or 'request'}: {first.get('msg', 'invalid')}"
    elif isinstance(exc, StarletteHTTPException):
        status, message = exc.status_code, str(exc.detail)
        code = _HTTP_CODES.get(status, f"http_{status}")
        headers.update(exc.headers or {})
    else:
        status, kind, code = 500, "server_error", "internal_error"
        if not isinstance(exc, SlmopsError):
            message = "internal error"
        log.error("request failed: %r", exc, exc_info=exc)
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(
    host: ModelHost, settings: ApiSettings, status_provider: Callable[[], dict[str, Any]] | None = None
) -> FastAPI:
    """The API app over `host`; `status_provider` adds the agent's own state to /status."""
    admission = Admission(settings.max_concurrent, settings.max_queue)

    def body_limit() -> int:
        if settings.max_body_bytes is not None:
            return settings.max_body_bytes
        current = host.current
        context = current.model.context_length if current is not None and current.model else 2048
        return context * BODY_BYTES_PER_TOKEN + BODY_OVERHEAD

    metrics = ApiMetrics(host.status, lambda: (admission.running, admission.waiting))
    executor = ThreadPoolExecutor(max_workers=settings.max_concurrent, thread_name_prefix="generate")
    jobs: set[Job] = set()
    bearer = HTTPBearer(auto_error=False)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        shown = settings.model_dump(exclude={"api_key"}) | {"api_key": "set" if settings.api_key else None}
        log.info("API settings: %s", shown)
        yield
        for job in list(jobs):
            job.cancel()
        executor.shutdown(wait=False, cancel_futures=True)

    def check_key(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if settings.api_key is None:
            return
        given = creds.credentials if creds else ""
        if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise _AuthError("missing or wrong API key (send 'Authorization: Bearer <key>')")

    def job_done(job: Job) -> None:
        jobs.discard(job)
        admission.release(job.duration_s)
        gen = job.gen
        metrics.prompt_tokens.inc(gen.prompt_tokens)
        metrics.completion_tokens.inc(gen.completion_tokens)
        if gen.finish_reason == "cancelled":
            metrics.cancelled.inc()
        if gen.ttft_s is not None:
            metrics.ttft.observe(gen.ttft_s)
        if gen.decode_tok_s is not None:
            metrics.decode.observe(gen.decode_tok_s)

    async def start(
        lease: Lease, prompt: Callable[[LoadedModel], list[int]], req: Any, request: Request
    ) -> Job:
        """Tokenize, check the request against the model, wait for a slot, then run it on a worker."""
        try:
            admission.check_room()
            model = lease.model
            ids = await asyncio.to_thread(prompt, model)
            params = translate.generation_params(
                req,
                lease.defaults,
                adapter=lease.adapter,
                default_max_tokens=lease.default_max_tokens,
                prompt_tokens=len(ids),
                context_length=model.context_length,
            )
            gen = model.generate(ids, params)
            await _admitted(admission, request)
        except BaseException:
            lease.release()
            raise
        job = Job(gen, lease, job_done)
        jobs.add(job)
        return job.start(executor)

    keyed = settings.api_key is not None  # the OpenAPI pages would be open to anyone: not served
    app = FastAPI(
        title="edge-agent API",
        version=__version__,
        description=__doc__,
        lifespan=lifespan,
        openapi_url=None if keyed else "/openapi.json",
        docs_url=None if keyed else "/docs",
        redoc_url=None if keyed else "/redoc",
    )
    for exc_type in (Exception, SlmopsError, RequestValidationError, StarletteHTTPException, _AuthError):
        app.add_exception_handler(exc_type, lambda _req, exc: error_response(exc))

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up and its event loop answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "no model loaded"}})
    async def readyz() -> JSONResponse:
        """A model is loaded and takes requests."""
        current = host.current
        if current is None:
            return JSONResponse({"ready": False}, status_code=503, headers={"Retry-After": "5"})
        return JSONResponse({"ready": True, "model": current.ref})

    @app.get("/status", tags=["health"], dependencies=[Depends(check_key)], responses=_ERRORS)
    async def status() -> dict[str, Any]:
        """The model host (active model, provider, fallbacks, swaps), the queue, and the agent's state."""
        body = host.status()
        body["api"] = {
            "running": admission.running,
            "queued": admission.waiting,
            "rejected": admission.rejected,
            "max_concurrent": settings.max_concurrent,
            "max_queue": settings.max_queue,
        }
        if status_provider is not None:
            body["agent"] = status_provider()
        return body

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def prometheus() -> Response:
        """Prometheus text format."""
        return Response(metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models", tags=["openai"], dependencies=[Depends(check_key)], responses=_ERRORS)
    async def list_models() -> ModelList:
        created = _created(host)
        return ModelList(
            data=[ModelCard(id=i, created=created, adapter=host.adapter_info(i)) for i in host.model_ids()]
        )

    @app.get("/v1/models/{model_id}", tags=["openai"], dependencies=[Depends(check_key)], responses=_ERRORS)
    async def get_model(model_id: str) -> ModelCard:
        if model_id not in host.model_ids():
            raise UnknownModelError(f"model {_short(model_id)!r} is not served here", "model")
        return ModelCard(id=model_id, created=_created(host), adapter=host.adapter_info(model_id))

    @app.post(
        "/v1/chat/completions",
        tags=["openai"],
        dependencies=[Depends(check_key)],
        response_model=ChatCompletion,
        responses={**_ERRORS, **_STREAM_DOC},
    )
    async def chat_completions(req: ChatCompletionRequest, request: Request) -> Response:
        lease = host.acquire(req.model)
        messages = translate.with_system(translate.chat_messages(req), lease.system_prompt)
        template = lease.served.chat_template
        job = await start(lease, lambda m: m.chat_prompt_ids(messages, template), req, request)
        rid, created, model_id = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), lease.model_id
        if req.stream:
            usage = bool(req.stream_options and req.stream_options.include_usage)
            return _SSE(_chat_events(job, rid, created, model_id, usage), job)
        text = await _collect(job, request)
        return _json(translate.to_chat_completion(rid, created, model_id, text, job.gen))

    @app.post(
        "/v1/completions",
        tags=["openai"],
        dependencies=[Depends(check_key)],
        response_model=Completion,
        responses={**_ERRORS, **_STREAM_DOC},
    )
    async def completions(req: CompletionRequest, request: Request) -> Response:
        lease = host.acquire(req.model)
        prompt = translate.completion_prompt(req, lease.defaults)
        job = await start(lease, lambda m: m.encode(prompt), req, request)
        rid, created, model_id = f"cmpl-{uuid.uuid4().hex}", int(time.time()), lease.model_id
        prefix = prompt if req.echo else ""
        if req.stream:
            usage = bool(req.stream_options and req.stream_options.include_usage)
            return _SSE(_completion_events(job, rid, created, model_id, usage, prefix), job)
        text = await _collect(job, request)
        return _json(translate.to_completion(rid, created, model_id, prefix + text, job.gen))

    app.add_middleware(_LimitBody, limit=body_limit)
    app.add_middleware(_CountRequests, metrics=metrics)
    return app


async def _admitted(admission: Admission, request: Request) -> None:
    """Wait for a slot, or give the place up as soon as the client hangs up."""
    acquire = asyncio.ensure_future(admission.acquire())
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({acquire, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if acquire in done:
        acquire.result()
        return
    acquire.cancel()
    try:
        await acquire
    except asyncio.CancelledError:
        pass
    else:
        admission.release()  # the slot came just as the client left: hand it on
    raise ClientGoneError("the client closed the connection while its request was queued")


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _short(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class _LimitBody:
    """Reads a request body only up to the limit: a larger Content-Length, or more bytes than the
    limit, is answered 413 at once. Bodies under the limit are read whole here and handed on."""

    def __init__(self, app: ASGIApp, limit: Callable[[], int]) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._too_large(scope, receive, send, limit, int(length))
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before its body arrived
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                await self._too_large(scope, receive, send, limit, size)
                return
            if not message.get("more_body", False):
                break
        handed = False

        async def replay() -> Message:
            nonlocal handed
            if not handed:
                handed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int, size: int) -> None:
        exc = RequestTooLargeError(f"the request body has {size}+ bytes; this server takes at most {limit}")
        response = error_response(exc)
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


def _created(host: ModelHost) -> int:
    current = host.current
    return int(current.loaded_at.timestamp()) if current else 0


def _json(model: BaseModel) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")


def _sse(model: BaseModel) -> bytes:
    return b"data: " + model.model_dump_json(exclude_none=True).encode() + b"\n\n"


async def _collect(job: Job, request: Request) -> str:
    """The whole text; a client that hangs up meanwhile cancels the generation."""

    async def cancel_on_disconnect() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        job.cancel()

    watcher = asyncio.create_task(cancel_on_disconnect())
    try:
        return await job.text()
    finally:
        watcher.cancel()


async def _stream_errors(events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Headers are gone once streaming starts: a failure mid-stream is sent as an error event."""
    try:
        async for event in events:
            yield event
    except SlmopsError as exc:
        body = json.loads(error_response(exc).body)
        yield b"data: " + json.dumps(body).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


def _chat_events(job: Job, rid: str, created: int, model: str, usage: bool) -> AsyncIterator[bytes]:
    async def events() -> AsyncIterator[bytes]:
        yield _sse(translate.chat_chunk(rid, created, model, role=True, content=""))
        async for text in job.pieces():
            yield _sse(translate.chat_chunk(rid, created, model, content=text))
        yield _sse(translate.chat_chunk(rid, created, model, finish=translate.finish_reason(job.gen)))
        if usage:
            yield _sse(translate.chat_usage_chunk(rid, created, model, job.gen))

    return _stream_errors(events())


def _completion_events(
    job: Job, rid: str, created: int, model: str, usage: bool, prefix: str
) -> AsyncIterator[bytes]:
    async def events() -> AsyncIterator[bytes]:
        if prefix:
            yield _sse(translate.completion_chunk(rid, created, model, prefix))
        async for text in job.pieces():
            yield _sse(translate.completion_chunk(rid, created, model, text))
        yield _sse(translate.completion_chunk(rid, created, model, "", translate.finish_reason(job.gen)))
        if usage:
            yield _sse(translate.completion_usage_chunk(rid, created, model, job.gen))

    return _stream_errors(events())


class _SSE(StreamingResponse):
    """Server-sent events; however the response ends (done, client gone, cancelled), the job stops."""

    def __init__(self, events: AsyncIterator[bytes], job: Job) -> None:
        super().__init__(
            events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.job = job

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancel()


class _CountRequests:
    """Counts every response by endpoint and status (a pure ASGI wrapper: streaming stays unbuffered)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def counting_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            path = scope.get("path", "")
            endpoint = (
                path
                if path in ENDPOINTS
                else ("/v1/models/{id}" if path.startswith("/v1/models/") else "other")
            )
            self.metrics.requests.labels(endpoint, str(status)).inc()
