"""Which YAML tag names which component class.

A plain table of import paths rather than classes registering themselves on import: the
module behind a tag is imported only when a config uses that tag, so loading a
HashEncoder config never imports torch.
"""

from __future__ import annotations

COMPONENT_CLASSES: dict[str, str] = {
    "SentenceTransformerEncoder": "gnes.encoder.text:SentenceTransformerEncoder",
    "HashEncoder": "gnes.encoder.hash:HashEncoder",
    "FaissIndexer": "gnes.indexer.faiss_index:FaissIndexer",
    "LmdbDocStore": "gnes.indexer.doc_store:LmdbDocStore",
    "ShardIndexer": "gnes.indexer.shard:ShardIndexer",
}
