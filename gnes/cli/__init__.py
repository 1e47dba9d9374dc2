"""The `gnes` command line."""
