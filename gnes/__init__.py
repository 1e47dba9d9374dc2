"""gnes: Generic Neural Elastic Search."""

__version__ = "0.1.0"
