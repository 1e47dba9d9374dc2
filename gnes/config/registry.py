"""Which YAML tag names which component class.

A plain table of import paths rather than classes registering themselves on import: the
module behind a tag is imported only when a config uses that tag, so loading a
HashEncoder config never imports torch.
"""

from __future__ import annotations

COMPONENT_CLASSES: dict[str, str] = {
    "SentenceTransformerEncoder": "gnes.encoder.text:SentenceTransformerEncoder",
    "HashEncoder": "gnes.encoder.hash:HashEncoder",
    "ImageEncoder": "gnes.encoder.image:ImageEncoder",
    # an encoder followed by trained vector stages (--mode TRAIN, --dump_path)
    "EncoderChain": "gnes.encoder.chain:EncoderChain",
    "PCAEncoder": "gnes.encoder.pca:PCAEncoder",
    # preprocessors (gnes preprocess): documents into chunks
    "SentenceSplitter": "gnes.preprocessor.text:SentenceSplitter",
    "SlidingWindowSplitter": "gnes.preprocessor.text:SlidingWindowSplitter",
    "ImageCropper": "gnes.preprocessor.image:ImageCropper",
    "FrameSampler": "gnes.preprocessor.frames:FrameSampler",
    "IndexConfig": "gnes.indexer.config:IndexConfig",
    # the name of the original GNES's faiss indexer tag
    "FaissIndexer": "gnes.indexer.config:IndexConfig",
}
