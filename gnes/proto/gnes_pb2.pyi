import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NdArray(_message.Message):
    __slots__ = ("data", "shape", "dtype")
    DATA_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    def __init__(self, data: _Optional[bytes] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("doc_id", "text", "blob", "raw", "offset", "offset_nd", "weight", "embedding")
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    OFFSET_ND_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    doc_id: int
    text: str
    blob: NdArray
    raw: bytes
    offset: int
    offset_nd: _containers.RepeatedScalarFieldContainer[int]
    weight: float
    embedding: NdArray
    def __init__(self, doc_id: _Optional[int] = ..., text: _Optional[str] = ..., blob: _Optional[_Union[NdArray, _Mapping]] = ..., raw: _Optional[bytes] = ..., offset: _Optional[int] = ..., offset_nd: _Optional[_Iterable[int]] = ..., weight: _Optional[float] = ..., embedding: _Optional[_Union[NdArray, _Mapping]] = ...) -> None: ...

class Document(_message.Message):
    __slots__ = ("doc_id", "chunks", "doc_type", "meta_info", "raw_text", "raw_image", "raw_video", "raw_bytes", "weight", "embedding", "meta_json", "instruction")
    class DocType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNKNOWN: _ClassVar[Document.DocType]
        TEXT: _ClassVar[Document.DocType]
        IMAGE: _ClassVar[Document.DocType]
        VIDEO: _ClassVar[Document.DocType]
        AUDIO: _ClassVar[Document.DocType]
    UNKNOWN: Document.DocType
    TEXT: Document.DocType
    IMAGE: Document.DocType
    VIDEO: Document.DocType
    AUDIO: Document.DocType
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    DOC_TYPE_FIELD_NUMBER: _ClassVar[int]
    META_INFO_FIELD_NUMBER: _ClassVar[int]
    RAW_TEXT_FIELD_NUMBER: _ClassVar[int]
    RAW_IMAGE_FIELD_NUMBER: _ClassVar[int]
    RAW_VIDEO_FIELD_NUMBER: _ClassVar[int]
    RAW_BYTES_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    META_JSON_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    doc_id: int
    chunks: _containers.RepeatedCompositeFieldContainer[Chunk]
    doc_type: Document.DocType
    meta_info: bytes
    raw_text: str
    raw_image: NdArray
    raw_video: NdArray
    raw_bytes: bytes
    weight: float
    embedding: NdArray
    meta_json: str
    instruction: str
    def __init__(self, doc_id: _Optional[int] = ..., chunks: _Optional[_Iterable[_Union[Chunk, _Mapping]]] = ..., doc_type: _Optional[_Union[Document.DocType, str]] = ..., meta_info: _Optional[bytes] = ..., raw_text: _Optional[str] = ..., raw_image: _Optional[_Union[NdArray, _Mapping]] = ..., raw_video: _Optional[_Union[NdArray, _Mapping]] = ..., raw_bytes: _Optional[bytes] = ..., weight: _Optional[float] = ..., embedding: _Optional[_Union[NdArray, _Mapping]] = ..., meta_json: _Optional[str] = ..., instruction: _Optional[str] = ...) -> None: ...

class DocError(_message.Message):
    __slots__ = ("doc_id", "position", "reason")
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    doc_id: int
    position: int
    reason: str
    def __init__(self, doc_id: _Optional[int] = ..., position: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("client_id", "request_id", "part_id", "num_part", "timeout", "routes", "gnes_version", "proto_version", "vcs_version", "part_ids", "body_type", "is_response", "doc_errors", "model_name")
    class BodyType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNSET: _ClassVar[Envelope.BodyType]
        TRAIN: _ClassVar[Envelope.BodyType]
        INDEX: _ClassVar[Envelope.BodyType]
        QUERY: _ClassVar[Envelope.BodyType]
        CONTROL: _ClassVar[Envelope.BodyType]
        ADMIN: _ClassVar[Envelope.BodyType]
        EMBED: _ClassVar[Envelope.BodyType]
    UNSET: Envelope.BodyType
    TRAIN: Envelope.BodyType
    INDEX: Envelope.BodyType
    QUERY: Envelope.BodyType
    CONTROL: Envelope.BodyType
    ADMIN: Envelope.BodyType
    EMBED: Envelope.BodyType
    class route(_message.Message):
        __slots__ = ("service", "start_time", "end_time", "first_start_time", "last_end_time", "service_identity")
        SERVICE_FIELD_NUMBER: _ClassVar[int]
        START_TIME_FIELD_NUMBER: _ClassVar[int]
        END_TIME_FIELD_NUMBER: _ClassVar[int]
        FIRST_START_TIME_FIELD_NUMBER: _ClassVar[int]
        LAST_END_TIME_FIELD_NUMBER: _ClassVar[int]
        SERVICE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
        service: str
        start_time: _timestamp_pb2.Timestamp
        end_time: _timestamp_pb2.Timestamp
        first_start_time: _timestamp_pb2.Timestamp
        last_end_time: _timestamp_pb2.Timestamp
        service_identity: str
        def __init__(self, service: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., first_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., service_identity: _Optional[str] = ...) -> None: ...
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PART_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_PART_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    GNES_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTO_VERSION_FIELD_NUMBER: _ClassVar[int]
    VCS_VERSION_FIELD_NUMBER: _ClassVar[int]
    PART_IDS_FIELD_NUMBER: _ClassVar[int]
    BODY_TYPE_FIELD_NUMBER: _ClassVar[int]
    IS_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    DOC_ERRORS_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    request_id: int
    part_id: int
    num_part: _containers.RepeatedScalarFieldContainer[int]
    timeout: int
    routes: _containers.RepeatedCompositeFieldContainer[Envelope.route]
    gnes_version: str
    proto_version: str
    vcs_version: str
    part_ids: _containers.RepeatedScalarFieldContainer[int]
    body_type: Envelope.BodyType
    is_response: bool
    doc_errors: _containers.RepeatedCompositeFieldContainer[DocError]
    model_name: str
    def __init__(self, client_id: _Optional[str] = ..., request_id: _Optional[int] = ..., part_id: _Optional[int] = ..., num_part: _Optional[_Iterable[int]] = ..., timeout: _Optional[int] = ..., routes: _Optional[_Iterable[_Union[Envelope.route, _Mapping]]] = ..., gnes_version: _Optional[str] = ..., proto_version: _Optional[str] = ..., vcs_version: _Optional[str] = ..., part_ids: _Optional[_Iterable[int]] = ..., body_type: _Optional[_Union[Envelope.BodyType, str]] = ..., is_response: _Optional[bool] = ..., doc_errors: _Optional[_Iterable[_Union[DocError, _Mapping]]] = ..., model_name: _Optional[str] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("envelope", "request", "response")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    envelope: Envelope
    request: Request
    response: Response
    def __init__(self, envelope: _Optional[_Union[Envelope, _Mapping]] = ..., request: _Optional[_Union[Request, _Mapping]] = ..., response: _Optional[_Union[Response, _Mapping]] = ...) -> None: ...

class Request(_message.Message):
    __slots__ = ("request_id", "train", "index", "search", "control", "admin", "embed", "model_name")
    class EmbedRequest(_message.Message):
        __slots__ = ("docs", "embeddings")
        DOCS_FIELD_NUMBER: _ClassVar[int]
        EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
        docs: _containers.RepeatedCompositeFieldContainer[Document]
        embeddings: NdArray
        def __init__(self, docs: _Optional[_Iterable[_Union[Document, _Mapping]]] = ..., embeddings: _Optional[_Union[NdArray, _Mapping]] = ...) -> None: ...
    class TrainRequest(_message.Message):
        __slots__ = ("docs", "flush", "embeddings", "index_name")
        DOCS_FIELD_NUMBER: _ClassVar[int]
        FLUSH_FIELD_NUMBER: _ClassVar[int]
        EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
        INDEX_NAME_FIELD_NUMBER: _ClassVar[int]
        docs: _containers.RepeatedCompositeFieldContainer[Document]
        flush: bool
        embeddings: NdArray
        index_name: str
        def __init__(self, docs: _Optional[_Iterable[_Union[Document, _Mapping]]] = ..., flush: _Optional[bool] = ..., embeddings: _Optional[_Union[NdArray, _Mapping]] = ..., index_name: _Optional[str] = ...) -> None: ...
    class IndexRequest(_message.Message):
        __slots__ = ("docs", "embeddings", "index_name", "doc_ids")
        DOCS_FIELD_NUMBER: _ClassVar[int]
        EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
        INDEX_NAME_FIELD_NUMBER: _ClassVar[int]
        DOC_IDS_FIELD_NUMBER: _ClassVar[int]
        docs: _containers.RepeatedCompositeFieldContainer[Document]
        embeddings: NdArray
        index_name: str
        doc_ids: NdArray
        def __init__(self, docs: _Optional[_Iterable[_Union[Document, _Mapping]]] = ..., embeddings: _Optional[_Union[NdArray, _Mapping]] = ..., index_name: _Optional[str] = ..., doc_ids: _Optional[_Union[NdArray, _Mapping]] = ...) -> None: ...
    class QueryRequest(_message.Message):
        __slots__ = ("query", "top_k", "embedding", "index_name", "nprobe", "ef_search", "filter_field", "filter_value_json", "return_embeddings", "chunk_reduce", "array_results")
        QUERY_FIELD_NUMBER: _ClassVar[int]
        TOP_K_FIELD_NUMBER: _ClassVar[int]
        EMBEDDING_FIELD_NUMBER: _ClassVar[int]
        INDEX_NAME_FIELD_NUMBER: _ClassVar[int]
        NPROBE_FIELD_NUMBER: _ClassVar[int]
        EF_SEARCH_FIELD_NUMBER: _ClassVar[int]
        FILTER_FIELD_FIELD_NUMBER: _ClassVar[int]
        FILTER_VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
        RETURN_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
        CHUNK_REDUCE_FIELD_NUMBER: _ClassVar[int]
        ARRAY_RESULTS_FIELD_NUMBER: _ClassVar[int]
        query: Document
        top_k: int
        embedding: NdArray
        index_name: str
        nprobe: int
        ef_search: int
        filter_field: str
        filter_value_json: str
        return_embeddings: bool
        chunk_reduce: str
        array_results: bool
        def __init__(self, query: _Optional[_Union[Document, _Mapping]] = ..., top_k: _Optional[int] = ..., embedding: _Optional[_Union[NdArray, _Mapping]] = ..., index_name: _Optional[str] = ..., nprobe: _Optional[int] = ..., ef_search: _Optional[int] = ..., filter_field: _Optional[str] = ..., filter_value_json: _Optional[str] = ..., return_embeddings: _Optional[bool] = ..., chunk_reduce: _Optional[str] = ..., array_results: _Optional[bool] = ...) -> None: ...
    class ControlRequest(_message.Message):
        __slots__ = ("command",)
        class Command(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
            __slots__ = ()
            TERMINATE: _ClassVar[Request.ControlRequest.Command]
            STATUS: _ClassVar[Request.ControlRequest.Command]
        TERMINATE: Request.ControlRequest.Command
        STATUS: Request.ControlRequest.Command
        COMMAND_FIELD_NUMBER: _ClassVar[int]
        command: Request.ControlRequest.Command
        def __init__(self, command: _Optional[_Union[Request.ControlRequest.Command, str]] = ...) -> None: ...
    class AdminRequest(_message.Message):
        __slots__ = ("command", "index_name", "config_json", "doc_ids", "exist_ok", "return_embeddings", "rows")
        class Command(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
            __slots__ = ()
            LIST: _ClassVar[Request.AdminRequest.Command]
            CREATE: _ClassVar[Request.AdminRequest.Command]
            DROP: _ClassVar[Request.AdminRequest.Command]
            STATS: _ClassVar[Request.AdminRequest.Command]
            SAVE: _ClassVar[Request.AdminRequest.Command]
            DELETE_DOCS: _ClassVar[Request.AdminRequest.Command]
            TRAIN_NOW: _ClassVar[Request.AdminRequest.Command]
            LOAD: _ClassVar[Request.AdminRequest.Command]
            GET_DOCS: _ClassVar[Request.AdminRequest.Command]
            COMPACT: _ClassVar[Request.AdminRequest.Command]
            RESERVE: _ClassVar[Request.AdminRequest.Command]
        LIST: Request.AdminRequest.Command
        CREATE: Request.AdminRequest.Command
        DROP: Request.AdminRequest.Command
        STATS: Request.AdminRequest.Command
        SAVE: Request.AdminRequest.Command
        DELETE_DOCS: Request.AdminRequest.Command
        TRAIN_NOW: Request.AdminRequest.Command
        LOAD: Request.AdminRequest.Command
        GET_DOCS: Request.AdminRequest.Command
        COMPACT: Request.AdminRequest.Command
        RESERVE: Request.AdminRequest.Command
        COMMAND_FIELD_NUMBER: _ClassVar[int]
        INDEX_NAME_FIELD_NUMBER: _ClassVar[int]
        CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
        DOC_IDS_FIELD_NUMBER: _ClassVar[int]
        EXIST_OK_FIELD_NUMBER: _ClassVar[int]
        RETURN_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
        ROWS_FIELD_NUMBER: _ClassVar[int]
        command: Request.AdminRequest.Command
        index_name: str
        config_json: str
        doc_ids: _containers.RepeatedScalarFieldContainer[int]
        exist_ok: bool
        return_embeddings: bool
        rows: int
        def __init__(self, command: _Optional[_Union[Request.AdminRequest.Command, str]] = ..., index_name: _Optional[str] = ..., config_json: _Optional[str] = ..., doc_ids: _Optional[_Iterable[int]] = ..., exist_ok: _Optional[bool] = ..., return_embeddings: _Optional[bool] = ..., rows: _Optional[int] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    EMBED_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    train: Request.TrainRequest
    index: Request.IndexRequest
    search: Request.QueryRequest
    control: Request.ControlRequest
    admin: Request.AdminRequest
    embed: Request.EmbedRequest
    model_name: str
    def __init__(self, request_id: _Optional[int] = ..., train: _Optional[_Union[Request.TrainRequest, _Mapping]] = ..., index: _Optional[_Union[Request.IndexRequest, _Mapping]] = ..., search: _Optional[_Union[Request.QueryRequest, _Mapping]] = ..., control: _Optional[_Union[Request.ControlRequest, _Mapping]] = ..., admin: _Optional[_Union[Request.AdminRequest, _Mapping]] = ..., embed: _Optional[_Union[Request.EmbedRequest, _Mapping]] = ..., model_name: _Optional[str] = ...) -> None: ...

class Response(_message.Message):
    __slots__ = ("request_id", "train", "index", "search", "control", "admin", "embed", "error")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SUCCESS: _ClassVar[Response.Status]
        ERROR: _ClassVar[Response.Status]
        PENDING: _ClassVar[Response.Status]
        READY: _ClassVar[Response.Status]
    SUCCESS: Response.Status
    ERROR: Response.Status
    PENDING: Response.Status
    READY: Response.Status
    class TrainResponse(_message.Message):
        __slots__ = ("status", "doc_errors")
        STATUS_FIELD_NUMBER: _ClassVar[int]
        DOC_ERRORS_FIELD_NUMBER: _ClassVar[int]
        status: Response.Status
        doc_errors: _containers.RepeatedCompositeFieldContainer[DocError]
        def __init__(self, status: _Optional[_Union[Response.Status, str]] = ..., doc_errors: _Optional[_Iterable[_Union[DocError, _Mapping]]] = ...) -> None: ...
    class IndexResponse(_message.Message):
        __slots__ = ("status", "num_docs", "doc_errors")
        STATUS_FIELD_NUMBER: _ClassVar[int]
        NUM_DOCS_FIELD_NUMBER: _ClassVar[int]
        DOC_ERRORS_FIELD_NUMBER: _ClassVar[int]
        status: Response.Status
        num_docs: int
        doc_errors: _containers.RepeatedCompositeFieldContainer[DocError]
        def __init__(self, status: _Optional[_Union[Response.Status, str]] = ..., num_docs: _Optional[int] = ..., doc_errors: _Optional[_Iterable[_Union[DocError, _Mapping]]] = ...) -> None: ...
    class ControlResponse(_message.Message):
        __slots__ = ("status", "info_json")
        STATUS_FIELD_NUMBER: _ClassVar[int]
        INFO_JSON_FIELD_NUMBER: _ClassVar[int]
        status: Response.Status
        info_json: str
        def __init__(self, status: _Optional[_Union[Response.Status, str]] = ..., info_json: _Optional[str] = ...) -> None: ...
    class QueryResponse(_message.Message):
        __slots__ = ("status", "top_k", "topk_results", "is_big_score_similar", "is_sorted", "partial", "shards_answered", "shards_expected", "result_counts", "result_ids", "result_scores", "result_texts", "result_metas_json")
        class ScoredResult(_message.Message):
            __slots__ = ("chunk", "doc", "score")
            class Score(_message.Message):
                __slots__ = ("value", "explained")
                VALUE_FIELD_NUMBER: _ClassVar[int]
                EXPLAINED_FIELD_NUMBER: _ClassVar[int]
                value: float
                explained: str
                def __init__(self, value: _Optional[float] = ..., explained: _Optional[str] = ...) -> None: ...
            CHUNK_FIELD_NUMBER: _ClassVar[int]
            DOC_FIELD_NUMBER: _ClassVar[int]
            SCORE_FIELD_NUMBER: _ClassVar[int]
            chunk: Chunk
            doc: Document
            score: Response.QueryResponse.ScoredResult.Score
            def __init__(self, chunk: _Optional[_Union[Chunk, _Mapping]] = ..., doc: _Optional[_Union[Document, _Mapping]] = ..., score: _Optional[_Union[Response.QueryResponse.ScoredResult.Score, _Mapping]] = ...) -> None: ...
        STATUS_FIELD_NUMBER: _ClassVar[int]
        TOP_K_FIELD_NUMBER: _ClassVar[int]
        TOPK_RESULTS_FIELD_NUMBER: _ClassVar[int]
        IS_BIG_SCORE_SIMILAR_FIELD_NUMBER: _ClassVar[int]
        IS_SORTED_FIELD_NUMBER: _ClassVar[int]
        PARTIAL_FIELD_NUMBER: _ClassVar[int]
        SHARDS_ANSWERED_FIELD_NUMBER: _ClassVar[int]
        SHARDS_EXPECTED_FIELD_NUMBER: _ClassVar[int]
        RESULT_COUNTS_FIELD_NUMBER: _ClassVar[int]
        RESULT_IDS_FIELD_NUMBER: _ClassVar[int]
        RESULT_SCORES_FIELD_NUMBER: _ClassVar[int]
        RESULT_TEXTS_FIELD_NUMBER: _ClassVar[int]
        RESULT_METAS_JSON_FIELD_NUMBER: _ClassVar[int]
        status: Response.Status
        top_k: int
        topk_results: _containers.RepeatedCompositeFieldContainer[Response.QueryResponse.ScoredResult]
        is_big_score_similar: bool
        is_sorted: bool
        partial: bool
        shards_answered: int
        shards_expected: int
        result_counts: _containers.RepeatedScalarFieldContainer[int]
        result_ids: NdArray
        result_scores: NdArray
        result_texts: _containers.RepeatedScalarFieldContainer[str]
        result_metas_json: _containers.RepeatedScalarFieldContainer[str]
        def __init__(self, status: _Optional[_Union[Response.Status, str]] = ..., top_k: _Optional[int] = ..., topk_results: _Optional[_Iterable[_Union[Response.QueryResponse.ScoredResult, _Mapping]]] = ..., is_big_score_similar: _Optional[bool] = ..., is_sorted: _Optional[bool] = ..., partial: _Optional[bool] = ..., shards_answered: _Optional[int] = ..., shards_expected: _Optional[int] = ..., result_counts: _Optional[_Iterable[int]] = ..., result_ids: _Optional[_Union[NdArray, _Mapping]] = ..., result_scores: _Optional[_Union[NdArray, _Mapping]] = ..., result_texts: _Optional[_Iterable[str]] = ..., result_metas_json: _Optional[_Iterable[str]] = ...) -> None: ...
    class EmbedResponse(_message.Message):
        __slots__ = ("status", "embeddings")
        STATUS_FIELD_NUMBER: _ClassVar[int]
        EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
        status: Response.Status
        embeddings: NdArray
        def __init__(self, status: _Optional[_Union[Response.Status, str]] = ..., embeddings: _Optional[_Union[NdArray, _Mapping]] = ...) -> None: ...
    class AdminResponse(_message.Message):
        __slots__ = ("status", "info_json", "docs")
        STATUS_FIELD_NUMBER: _ClassVar[int]
        INFO_JSON_FIELD_NUMBER: _ClassVar[int]
        DOCS_FIELD_NUMBER: _ClassVar[int]
        status: Response.Status
        info_json: str
        docs: _containers.RepeatedCompositeFieldContainer[Document]
        def __init__(self, status: _Optional[_Union[Response.Status, str]] = ..., info_json: _Optional[str] = ..., docs: _Optional[_Iterable[_Union[Document, _Mapping]]] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    EMBED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    train: Response.TrainResponse
    index: Response.IndexResponse
    search: Response.QueryResponse
    control: Response.ControlResponse
    admin: Response.AdminResponse
    embed: Response.EmbedResponse
    error: str
    def __init__(self, request_id: _Optional[int] = ..., train: _Optional[_Union[Response.TrainResponse, _Mapping]] = ..., index: _Optional[_Union[Response.IndexResponse, _Mapping]] = ..., search: _Optional[_Union[Response.QueryResponse, _Mapping]] = ..., control: _Optional[_Union[Response.ControlResponse, _Mapping]] = ..., admin: _Optional[_Union[Response.AdminResponse, _Mapping]] = ..., embed: _Optional[_Union[Response.EmbedResponse, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...
