"""Indexers store vectors with their documents and answer top-k queries; see `base.BaseIndexer`."""
