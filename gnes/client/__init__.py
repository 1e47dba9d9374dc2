"""Clients of a running gnes deployment."""

from .grpc_client import GnesClient, GnesError, IndexSummary, SearchHit

__all__ = ["GnesClient", "GnesError", "IndexSummary", "SearchHit"]
