"""The request and response bodies of the HTTP API (they make the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbedIn(_Body):
    sentences: list[StrictStr] = Field(min_length=1, description="texts to embed, at least one")


class EmbedOut(BaseModel):
    embeddings: list[list[float]]


class BatchIn(_Body):
    """The external-function batch format: one [row number, text] pair per row."""

    data: list[tuple[int, StrictStr]] = Field(min_length=1)


class BatchOut(BaseModel):
    data: list[tuple[int, list[float]]]


class TitleIn(_Body):
    title: StrictStr = Field(min_length=1)


class ApplyOut(BaseModel):
    model: str
    embedding: list[float]


class Hit(BaseModel):
    id: int
    score: float
    text: str = ""
    metadata: dict[str, Any] | None = None


class SearchWithOut(BaseModel):
    model: str
    results: list[Hit]


class DocIn(_Body):
    id: int = Field(ge=0, lt=1 << 63)
    text: StrictStr = Field(min_length=1)
    metadata: dict[str, Any] | None = None


class IndexIn(_Body):
    documents: list[DocIn] = Field(min_length=1)
    index: str = Field("", description="logical index name; empty: the default index (a named model's own index)")
    model: str = Field("", description="a named model to encode with (see /models); empty: the default model")


class IndexOut(BaseModel):
    indexed: int


class Filter(_Body):
    field: StrictStr = Field(min_length=1)
    value: Any


class SearchIn(_Body):
    text: StrictStr = Field(min_length=1)
    top_k: int = Field(10, ge=1, le=1000)
    index: str = ""
    filter: Filter | None = None


class SearchOut(BaseModel):
    results: list[Hit]
    partial: bool = False


class ErrorOut(BaseModel):
    detail: str


class InvalidOut(BaseModel):
    """422: the service's own reason (a string), or FastAPI's list of the fields that did not validate."""

    detail: str | list[dict[str, Any]]
