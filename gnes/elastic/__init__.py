"""Elastic shards: the middleman's link to its shards, membership, and handover of documents
when shards join or leave (see docs/elastic.md)."""
