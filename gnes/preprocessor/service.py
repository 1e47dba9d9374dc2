"""The preprocessor service: chunks every document of an index or train request on its way
to the encoders; queries and everything else pass through unchanged.

A document that cannot be chunked (not an image, too many chunks, empty) is answered with
an error naming it while the rest of its request goes on: the request becomes two parts,
the good documents and an ERROR answer for the bad ones, and the reducer joins the two, so
the caller hears both the count stored and why the others were not.
"""

from __future__ import annotations

from ..config import load_component
from ..proto import pb
from ..service.base import BaseService
from ..service.message import BodyType, Packet, error_response
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
        failures: list[str] = []
        for i, doc in enumerate(body.docs):
            try:
                self.chunks_made += self.preprocessor.apply(doc)
                good.append(doc)
            except (ValueError, TypeError) as exc:
                named = f"doc_id {doc.doc_id}" in str(exc) or f"document {doc.doc_id}" in str(exc)
                failures.append(str(exc) if named else f"document {i} (doc_id {doc.doc_id}): {exc}")
        if not failures:
            packet.body = request.SerializeToString()
            self.send_out(packet)
            return
        reason = f"{self.name}: " + "; ".join(failures)
        if not good:
            self.fail(packet, reason)
            return
        self.errors += 1
        del body.docs[:]
        body.docs.extend(good)
        self._send_split(packet, request.SerializeToString(), reason)

    def _send_split(self, packet: Packet, good_body: bytes, reason: str) -> None:
        """Part 0: the request with its good documents; part 1: the ERROR answer for the rest."""
        env = packet.envelope
        for part, body, is_response in ((0, good_body, False), (1, b"", True)):
            part_env = pb.Envelope()
            part_env.CopyFrom(env)
            part_env.num_part.append(2)
            part_env.part_ids.append(part)
            part_env.part_id = part
            part_env.is_response = is_response
            if is_response:
                body = error_response(env.request_id, env.body_type, reason).SerializeToString()
            self.send_out(Packet(part_env, body, packet.received_ns))
