"""A gRPC server interceptor that checks the ``authorization`` metadata of every call.

``Index`` and ``Train`` need an admin token. ``Query`` needs a read token; ``Call`` and
``StreamCall`` carry any kind of request, so each request they carry is checked on its own
(`policy.required_role`). The standard health service stays open, as probes carry no token.
A missing or unknown token ends the call with UNAUTHENTICATED, a read token on an admin
request with PERMISSION_DENIED; both are logged with the method and the peer, never the token.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from ..proto import pb
from .policy import required_role
from .tokens import Role, TokenStore, parse_authorization

log = logging.getLogger("gnes.auth")

_OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
_METHOD_ROLE = {"Index": Role.ADMIN, "Train": Role.ADMIN, "Query": Role.READ}


class _Forbidden(Exception):
    """A request of a stream needs more than the caller's role."""


class TokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, store: TokenStore) -> None:
        self.store = store

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None or not self.store.enabled or method.startswith(_OPEN_PREFIXES):
            return handler
        metadata = {key: value for key, value in details.invocation_metadata or ()}
        token = parse_authorization(metadata.get("authorization"))
        role = self.store.role_of(token)
        name = method.rsplit("/", 1)[-1]
        if role is None:
            why = "no token" if token is None else "an unknown token"
            log.warning("gRPC %s refused: %s (401)", method, why)
            return _deny(handler, grpc.StatusCode.UNAUTHENTICATED, f"{why}: send 'authorization: Bearer <token>'")
        needed = _METHOD_ROLE.get(name)
        if needed is not None and role < needed:
            log.warning("gRPC %s refused: a %s token, %s needed (403)", method, role.name.lower(), needed.name.lower())
            return _deny(handler, grpc.StatusCode.PERMISSION_DENIED, f"{name} needs an admin token")
        if handler.unary_unary is not None:
            return _check_unary(handler, role, method)
        if handler.stream_stream is not None:
            return _check_stream(handler, role, method)
        return handler


def _refusal(request: pb.Request, role: Role, method: str) -> str | None:
    needed = required_role(request)
    if role >= needed:
        return None
    kind = request.WhichOneof("body") or "empty"
    log.warning("gRPC %s refused: a %s request with a %s token (403)", method, kind, role.name.lower())
    return f"a {kind} request needs an {needed.name.lower()} token"


def _check_unary(handler: grpc.RpcMethodHandler, role: Role, method: str) -> grpc.RpcMethodHandler:
    inner = handler.unary_unary

    async def behavior(request: pb.Request, context: grpc.aio.ServicerContext) -> Any:
        reason = _refusal(request, role, method)
        if reason is not None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)
        return await inner(request, context)

    return grpc.unary_unary_rpc_method_handler(
        behavior, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )


def _check_stream(handler: grpc.RpcMethodHandler, role: Role, method: str) -> grpc.RpcMethodHandler:
    inner = handler.stream_stream

    async def behavior(requests: AsyncIterator[pb.Request], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        reason: list[str] = []

        async def checked() -> AsyncIterator[pb.Request]:
            async for request in requests:
                refusal = _refusal(request, role, method)
                if refusal is not None:
                    reason.append(refusal)
                    raise _Forbidden(refusal)
                yield request

        try:
            async for response in inner(checked(), context):
                yield response
        except _Forbidden:
            pass  # the answers to the requests before it were sent; the call ends below
        if reason:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason[0])

    return grpc.stream_stream_rpc_method_handler(
        behavior, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )


def _deny(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, details: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that ends the call with `code`."""

    async def unary(request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, details)

    async def stream(requests: object, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        await context.abort(code, details)
        yield  # pragma: no cover (abort raises): makes this an async generator

    serde = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(stream, **serde)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, **serde)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(stream, **serde)
    return grpc.unary_unary_rpc_method_handler(unary, **serde)
