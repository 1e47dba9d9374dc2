"""Running index shards on a cluster and finding them again.

Shards launched by a scheduler (SLURM through submitit, or a local stand-in) land on hosts that are only
known once they run, so each shard appends its address to a shared *discovery file* and clients and
proxies read it. ``discovery`` has no dependency beyond the standard library; the launcher needs the
``cluster`` extra (submitit) and imports it only when it launches something.
"""

from .discovery import ShardAddress, parse_addresses, read_discovery, register_shard, write_header

__all__ = ["ShardAddress", "parse_addresses", "read_discovery", "register_shard", "write_header"]
