"""Which role a request needs: reading needs `read`, changing data or the deployment `admin`.

EMBED only computes vectors and stores nothing, so it is a read like a search (issue 9: read-only
tokens search and embed)."""

from __future__ import annotations

from ..proto import pb
from .tokens import Role

Admin = pb.Request.AdminRequest
# Admin commands that only look: listing indexes, their counts, fetching documents.
_READ_ADMIN = frozenset({Admin.LIST, Admin.STATS, Admin.GET_DOCS})


def required_role(request: pb.Request) -> Role:
    kind = request.WhichOneof("body")
    if kind in ("search", "embed"):
        return Role.READ
    if kind == "control":
        stop = request.control.command == pb.Request.ControlRequest.TERMINATE
        return Role.ADMIN if stop else Role.READ
    if kind == "admin" and request.admin.command in _READ_ADMIN:
        return Role.READ
    # index, train, every other admin command, and a request without a body (the pipeline
    # answers that with an error, but only an admin gets to see it).
    return Role.ADMIN
