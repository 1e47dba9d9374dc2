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
            kept = [_copy(doc) for doc in good]
            del body.docs[:]
            body.docs.extend(kept)
            env.doc_errors.extend(failures)
        packet.body = request.SerializeToString()
        self.send_out(packet)


def _copy(doc: pb.Document) -> pb.Document:
    copy = pb.Document()
    copy.CopyFrom(doc)  # a message taken out of a repeated field must be copied before it is cleared
    return copy
