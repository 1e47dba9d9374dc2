"""Clients: GnesClient talks to the gRPC frontend (text in, ranked documents out);
IndexClient talks to index shards directly (vectors in, ids and metadata out)."""

from .grpc_client import GnesClient, GnesError, IndexSummary, SearchHit
from .index_client import IndexClient, IndexClientError, SearchResult

__all__ = ["GnesClient", "GnesError", "IndexClient", "IndexClientError", "IndexSummary", "SearchHit", "SearchResult"]
