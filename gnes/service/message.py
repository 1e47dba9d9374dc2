"""How a message travels between services: an envelope frame and a body frame.

The envelope (routing, parts, timestamps) is small and is all a proxy parses; the body (a
serialized Request or Response) is passed through untouched unless a service must read it.
On a PUB socket a topic frame comes first; a SUB socket strips it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import zmq
from google.protobuf.message import DecodeError

from ..proto import WireError, pb


class _BodyTypes:
    """pb.Envelope.BodyType with its values as plain attributes: the protobuf wrapper finds a
    value through __getattr__ on every access (2 to 5 us here), and each hop compares several."""

    def __init__(self, wrapper: Any) -> None:
        self._wrapper = wrapper
        for name, number in wrapper.items():
            setattr(self, name, number)

    def Name(self, number: int) -> str:  # noqa: N802 (the name protobuf's wrapper gives it)
        return self._wrapper.Name(number)

    def __getattr__(self, name: str) -> Any:  # Value, keys, items, ...: the wrapper's own
        return getattr(self._wrapper, name)


BodyType: Any = _BodyTypes(pb.Envelope.BodyType)

_BODY_OF_REQUEST = {
    "train": BodyType.TRAIN,
    "index": BodyType.INDEX,
    "search": BodyType.QUERY,
    "control": BodyType.CONTROL,
    "admin": BodyType.ADMIN,
    "embed": BodyType.EMBED,
}


def body_type_of(request: pb.Request) -> int:
    kind = request.WhichOneof("body")
    if kind is None:
        raise WireError("the request has no body: set one of train, index, search, control, admin, embed")
    return _BODY_OF_REQUEST[kind]


@dataclass(slots=True)
class Packet:
    envelope: pb.Envelope
    body: bytes
    received_ns: int = 0
    # A direct client's bulk index request sends its vectors as a frame of their own: the
    # frame's memory, not copied into the body (see IndexClient and gnes/service/indexer.py).
    payload: memoryview | None = None

    def request(self) -> pb.Request:
        if self.envelope.is_response:
            raise WireError("expected a request, got a response")
        try:
            return pb.Request.FromString(self.body)
        except DecodeError as exc:
            raise WireError(f"the request body is not a valid gnes Request: {exc}") from exc

    def response(self) -> pb.Response:
        if not self.envelope.is_response:
            raise WireError("expected a response, got a request")
        try:
            return pb.Response.FromString(self.body)
        except DecodeError as exc:
            raise WireError(f"the response body is not a valid gnes Response: {exc}") from exc

    @property
    def key(self) -> tuple[str, int]:
        return self.envelope.client_id, self.envelope.request_id


def parse_frames(frames: list[bytes]) -> Packet:
    if len(frames) != 2:
        raise WireError(f"expected 2 frames (envelope, body), got {len(frames)}")
    envelope = pb.Envelope()
    try:
        envelope.ParseFromString(frames[0])
    except DecodeError as exc:
        raise WireError(f"the envelope frame is not a valid gnes Envelope: {exc}") from exc
    if envelope.body_type == BodyType.UNSET:
        raise WireError("the envelope does not say what the body is (body_type is unset)")
    return Packet(envelope, frames[1], time.time_ns())


def parse_bundle(frames: list[bytes]) -> list[Packet]:
    """The packets of one message: [envelope, body] pairs, one or more. Several packets in one
    message cost one send, one receive and one wake-up of each side instead of one per packet;
    on this 2-core VM a message costs about as much CPU as handling a small index part."""
    if not frames or len(frames) % 2:
        raise WireError(f"expected [envelope, body] pairs of frames, got {len(frames)} frames")
    return [parse_frames(frames[i : i + 2]) for i in range(0, len(frames), 2)]


def bundle_frames(packets: list[Packet]) -> list[bytes]:
    """The frames of one message carrying `packets` (read back by parse_bundle)."""
    frames: list[bytes] = []
    for packet in packets:
        frames += (packet.envelope.SerializeToString(), packet.body)
    return frames


def recv_packets(sock: zmq.Socket, has_topic: bool, flags: int = 0) -> list[Packet]:
    frames = sock.recv_multipart(flags)
    if has_topic:
        frames = frames[1:]
    return parse_bundle(frames)


def stamp_route(packet: Packet, service: str, identity: str) -> None:
    """Record this hop: which service handled the message, from its arrival to now."""
    route = packet.envelope.routes.add()
    route.service = service
    route.service_identity = identity
    route.start_time.FromNanoseconds(packet.received_ns or time.time_ns())
    route.end_time.FromNanoseconds(time.time_ns())


def send_packet(sock: zmq.Socket, packet: Packet, topic: bytes | None = None) -> None:
    frames = [packet.envelope.SerializeToString(), packet.body]
    if topic is not None:
        frames.insert(0, topic)
    sock.send_multipart(frames)


def error_response(request_id: int, body_type: int, reason: str) -> pb.Response:
    """A Response of the request's own kind with status ERROR, so every client sees the failure."""
    response = pb.Response(request_id=request_id, error=reason)
    status = pb.Response.ERROR
    if body_type == BodyType.INDEX:
        response.index.status = status
    elif body_type == BodyType.QUERY:
        response.search.status = status
    elif body_type == BodyType.TRAIN:
        response.train.status = status
    elif body_type == BodyType.ADMIN:
        response.admin.status = status
    elif body_type == BodyType.EMBED:
        response.embed.status = status
    else:
        response.control.status = status
    return response


def as_error(packet: Packet, reason: str) -> Packet:
    """Turn a packet into the ERROR response for its request; routing fields are kept."""
    request_id = packet.envelope.request_id
    packet.envelope.is_response = True
    packet.body = error_response(request_id, packet.envelope.body_type, reason).SerializeToString()
    return packet


def response_status(response: pb.Response) -> int:
    kind = response.WhichOneof("body")
    return getattr(response, kind).status if kind else pb.Response.ERROR


def failed(response: pb.Response) -> bool:
    """Whether an answer is a failure: a reason given, an ERROR status, or no body at all."""
    return bool(response.error) or response_status(response) == pb.Response.ERROR


def answer_control(raw: bytes, info: dict[str, object]) -> tuple[pb.Response, bool]:
    """The reply of a control socket to `raw`, and whether it asks the service to terminate.
    Anything unreadable gets an ERROR reply too: a REP socket must always answer."""
    response = pb.Response()
    try:
        request = pb.Request.FromString(raw)
        if request.WhichOneof("body") != "control":
            raise WireError("the control socket takes control requests only")
    except Exception as exc:
        response.control.status = pb.Response.ERROR
        response.error = f"bad control request: {exc}"
        return response, False
    response.request_id = request.request_id
    terminate = request.control.command == pb.Request.ControlRequest.TERMINATE
    response.control.status = pb.Response.SUCCESS if terminate else pb.Response.READY
    response.control.info_json = json.dumps(info)
    return response, terminate
