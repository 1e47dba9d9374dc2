"""Bearer tokens for the HTTP service and the gRPC frontend: who may search, who may change data."""

from .policy import required_role
from .tokens import Role, TokenStore, parse_authorization

__all__ = ["Role", "TokenStore", "parse_authorization", "required_role"]
