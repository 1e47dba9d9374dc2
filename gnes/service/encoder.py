"""The encoder service: adds a vector to every document and query that passes through."""

from __future__ import annotations

import time
from operator import attrgetter

import numpy as np

from ..config import load_component
from ..encoder.base import BaseEncoder
from ..encoder.chunks import encode_chunked
from ..encoder.requests import TrainedState, encode_request, handles
from ..proto import WireError, array_to_nd, doc_text, pb
from .base import BaseService
from .message import BodyType, Packet

_TEXT_FIELDS = attrgetter("raw_text", "instruction", "chunks")


class EncoderService(BaseService):
    kind = "encoder"
    checks_mode = True

    def __init__(self, config, encoder: BaseEncoder | None = None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(config)
        self.encoder = encoder

    def setup(self) -> None:
        if self.encoder is None and (self.config.plugin or self.config.package):
            from ..models.plugin import PluginEncoder  # a get_embed_fn() plugin (gnes/models/plugin.py)

            self.encoder = PluginEncoder(self.config.plugin, self.config.package)
        if self.encoder is None:
            if not self.config.yaml_path:
                raise ValueError("the encoder needs --yaml_path, e.g. yaml/encoder-minilm.yml")
            self.encoder = load_component(self.config.yaml_path, BaseEncoder)
        self.encoder.start()
        self._trained = TrainedState(self.encoder, self.config.dump_path, self.log)
        self._trained.refresh()  # a trainable chain's stages saved in --dump_path (gnes/encoder/requests.py)
        self.log.info("encoder %s ready, %d dimensions", type(self.encoder).__name__, self.encoder.dim)

    def teardown(self) -> None:
        if self.encoder is not None:
            self.encoder.close()

    def link_info(self) -> dict[str, str]:
        return {"model": self.config.model_name}  # the dispatcher's pool this encoder joins

    def status_info(self) -> dict[str, object]:
        info = {**super().status_info(), "dim": self.encoder.dim if self.encoder else None}
        info["model_name"] = self.config.model_name or "default"
        if self.encoder is not None:
            # What `gnes client status` shows: the class, and the model it loaded where it has one.
            name = type(self.encoder).__name__
            default = "all-MiniLM-L6-v2" if name == "SentenceTransformerEncoder" else name  # model_path None
            info["encoder"] = name
            info["model"] = str(getattr(self.encoder, "model_path", None) or default)
        return info

    def handle(self, packet: Packet) -> None:
        env = packet.envelope
        if env.is_response or env.body_type not in (BodyType.INDEX, BodyType.TRAIN, BodyType.QUERY, BodyType.EMBED):
            self.send_out(packet)
            return
        request = packet.request()
        kind = request.WhichOneof("body")
        named = self.config.model_name
        if named and kind in ("index", "train", "search") and not getattr(request, kind).index_name:
            getattr(request, kind).index_name = named  # a named model's own logical index (its dimension)
        if handles(self.encoder, request):  # images, or trained stages: gnes/encoder/requests.py
            encode_request(self.encoder, request, env, self._trained, self._keepalive)
        elif kind == "search":
            self._encode_query(request.search)
        else:
            self._encode_docs(getattr(request, kind))
        packet.body = request.SerializeToString()
        self.send_out(packet)

    def _keepalive(self) -> None:
        """A HELLO between the batches of a long encode, so that the dispatcher does not take
        this encoder for dead meanwhile (gnes/elastic/link.py WORKER_DEAD_AFTER_S)."""
        if self._worker is not None:
            self._worker.on_timer(time.monotonic())

    def _encode_docs(self, body: pb.Request.IndexRequest | pb.Request.TrainRequest | pb.Request.EmbedRequest) -> None:
        if body.HasField("embeddings"):  # vectors given by the caller (bulk load): nothing to encode
            return
        docs = body.docs
        # What the text path needs of each document, read in one pass: every field read of a
        # protobuf message costs about half a microsecond, and three passes (chunks, text,
        # instruction) cost 334 us a request of 100 documents, against 100 us for this one.
        fields = list(map(_TEXT_FIELDS, docs))
        if any(chunks for _, _, chunks in fields) and encode_chunked(self.encoder, body):
            return  # chunks from a preprocessor: gnes/encoder/chunks.py
        # Surrounding whitespace carries no meaning (GNES 0.0.47 clients send lines with their newline).
        # raw_text first; the full rules (raw_bytes, text chunks, errors) only where it is empty.
        texts = [text.strip() for text, _, _ in fields]
        if not all(texts):
            texts = [text or doc_text(d).strip() for text, d in zip(texts, docs, strict=True)]
            for i, text in enumerate(texts):
                if not text:
                    raise WireError(f"document {i} (doc_id {docs[i].doc_id}) has no text to encode")
        instructions = [instruction for _, instruction, _ in fields]
        if any(instructions):
            vectors = self._encode_pairs(list(zip(instructions, texts, strict=True)))
        else:
            vectors = self.encoder.encode(texts) if texts else np.zeros((0, self.encoder.dim), np.float32)
        array_to_nd(vectors, body.embeddings)

    def _encode_pairs(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """[instruction, text] pairs, for a model that declares it takes them; any other refuses them
        rather than dropping the instructions silently."""
        if not getattr(self.encoder, "takes_pairs", False):
            model = self.config.model_name or "default"
            raise WireError(f"the model {model!r} does not take [instruction, text] pairs; send plain texts")
        return self.encoder.encode_pairs(pairs)

    def _encode_query(self, search: pb.Request.QueryRequest) -> None:
        if search.HasField("embedding"):
            return
        text = doc_text(search.query).strip()
        if not text:
            raise WireError("the query has no text to encode")
        if search.query.instruction:
            array_to_nd(self._encode_pairs([(search.query.instruction, text)]), search.embedding)
            return
        array_to_nd(self.encoder.encode([text]), search.embedding)
