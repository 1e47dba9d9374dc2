"""Logical indexes: faiss vectors, an LMDB store with a write-ahead log, metadata filters."""
