"""The client side of the pipeline, shared by the gRPC frontend and the HTTP service."""

from .session import PipelineSession

__all__ = ["PipelineSession"]
