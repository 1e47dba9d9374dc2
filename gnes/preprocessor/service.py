"""The preprocessor service: chunks every document of an index or train request on its way
to the encoders; queries and everything else pass through unchanged.

A document that cannot be chunked (not an image, too many chunks, empty) is taken out of
its request and named in the envelope's doc_errors, as the encoder does for an image it
cannot read (gnes/encoder/requests.py); the frontend puts them in the answer next to the
count of documents stored. A request whose every document fails is answered with an error.
"""

from __future__ import annotations

from ..config import load_component
from ..proto import pb
from ..service.base import BaseService
from ..service.message import BodyType, Packet
from .base import BasePreprocessor


class PreprocessService(BaseService):
    kind = "preprocessor"
    checks_mode = True

    def __init__(self, config, preprocessor: BasePreprocessor | None = None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(config)
        self.preprocessor = preprocessor
        self.chunks_made = 0

    def setup(self) -> None:
        if self.preprocessor is None:
            if not self.config.yaml_path:
                raise ValueError("the preprocessor needs --yaml_path, e.g. yaml/preprocess-sentences.yml")
            self.preprocessor = load_component(self.config.yaml_path, BasePreprocessor)
        self.preprocessor.start()
        self.log.info("preprocessor %s ready", type(self.preprocessor).__name__)

    def teardown(self) -> None:
        if self.preprocessor is not None:
            self.preprocessor.close()

    def status_info(self) -> dict[str, object]:
        info = super().status_info()
        info["preprocessor"] = type(self.preprocessor).__name__ if self.preprocessor else None
        info["chunks_made"] = self.chunks_made
        return info

    def handle(self, packet: Packet) -> None:
        env = packet.envelope
        if env.is_response or env.body_type not in (BodyType.INDEX, BodyType.TRAIN):
            self.send_out(packet)
            return
        request = packet.request()
        body = getattr(request, request.WhichOneof("body"))
        if body.HasField("embeddings"):  # vectors given by the caller: nothing to chunk or encode
            self.send_out(packet)
            return
        good: list[pb.Document] = []
        failures: list[pb.DocError] = []
        for i, doc in enumerate(body.docs):
            try:
                self.chunks_made += self.preprocessor.apply(doc)
                good.append(doc)
            except (ValueError, TypeError) as exc:
                named = f"doc_id {doc.doc_id}" in str(exc) or f"document {doc.doc_id}" in str(exc)
                reason = str(exc) if named else f"document {i} (doc_id {doc.doc_id}): {exc}"
                failures.append(pb.DocError(doc_id=doc.doc_id, position=i, reason=reason))
        if failures and not good:
            self.fail(packet, f"{self.name}: " + "; ".join(f.reason for f in failures))
            return
        if failures:
            self.errors += len(failures)
            env.doc_errors.extend(failures)
        groups = _groups([len(doc.chunks) for doc in good], self.preprocessor.chunks_per_message)
        if len(groups) == 1 and not failures:
            packet.body = request.SerializeToString()
            self.send_out(packet)
            return
        self._send_parts(packet, request, good, groups)

    def _send_parts(self, packet: Packet, request: pb.Request, good: list[pb.Document], groups: list[range]) -> None:
        """The request with only its good documents, in parts the reducer joins again (as the
        income proxy's batches): every part's envelope names the refused documents, and the
        merged answer keeps one envelope, so they are reported once."""
        kind = request.WhichOneof("body")
        rest = type(getattr(request, kind))()
        rest.CopyFrom(getattr(request, kind))
        rest.ClearField("docs")
        for part, rows in enumerate(groups):
            piece = pb.Request(request_id=request.request_id)
            sub = getattr(piece, kind)
            sub.CopyFrom(rest)
            sub.docs.extend(good[i] for i in rows)
            env = pb.Envelope()
            env.CopyFrom(packet.envelope)
            if len(groups) > 1:
                env.num_part.append(len(groups))
                env.part_ids.append(part)
                env.part_id = part
            self.send_out(Packet(env, piece.SerializeToString(), packet.received_ns))


def _groups(sizes: list[int], limit: int) -> list[range]:
    """Consecutive documents whose chunks add up to at most `limit` (a bigger one alone)."""
    groups: list[range] = []
    start, total = 0, 0
    for i, size in enumerate(sizes):
        if i > start and total + size > limit:
            groups.append(range(start, i))
            start, total = i, 0
        total += size
    groups.append(range(start, len(sizes)))
    return groups


def _copy(doc: pb.Document) -> pb.Document:
    copy = pb.Document()
    copy.CopyFrom(doc)  # a message taken out of a repeated field must be copied before it is cleared
    return copy
