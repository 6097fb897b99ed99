"""The key, checked before any route (a plain ASGI middleware, so the event stream passes untouched).

A browser cannot put a Bearer header on a page link or an EventSource, so the key may also come as
`?key=` once; the answer then sets it as an HttpOnly cookie that every later request carries.
"""

from __future__ import annotations

import hmac
from http.cookies import SimpleCookie

from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

KEY_COOKIE = "slmops_dashboard_key"
OPEN_PREFIXES = ("/static/",)  # our own script and stylesheet are no secret


class KeyGate:
    def __init__(self, app: ASGIApp, key: str | None) -> None:
        self.app = app
        self.key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.key is None or scope["path"].startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        in_query = request.query_params.get("key")
        given = in_query or request.cookies.get(KEY_COOKIE) or ""
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), self.key.encode()):
            refusal = PlainTextResponse(
                "missing or wrong key: open the page once with ?key=<key>, "
                "or send 'Authorization: Bearer <key>'",
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
            await refusal(scope, receive, send)
            return
        if not in_query:
            await self.app(scope, receive, send)
            return

        async def remember(message: Message) -> None:
            if message["type"] == "http.response.start":
                cookie: SimpleCookie = SimpleCookie()
                cookie[KEY_COOKIE] = self.key or ""
                cookie[KEY_COOKIE].update({"httponly": True, "samesite": "Strict", "path": "/"})
                header = cookie.output(header="").strip().encode("latin-1")
                message["headers"] = [*message.get("headers", []), (b"set-cookie", header)]
            await send(message)

        await self.app(scope, receive, remember)


__all__ = ["KEY_COOKIE", "KeyGate"]
