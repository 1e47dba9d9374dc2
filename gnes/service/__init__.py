"""The gnes services: proxies, encoder, indexer shard and gRPC frontend, each run by a gnes subcommand."""
