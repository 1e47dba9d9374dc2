"""Build components from YAML files whose nodes are tagged with class names (`!HashEncoder`)."""

from .loader import ConfigError, load_component

__all__ = ["ConfigError", "load_component"]
