"""The one exception tree of bert-serving, shared by the client and the server.

Every error a request can meet has one kind, and each kind has one wire code (sent in
ZeroMQ error replies) and one HTTP status::

    BertServingError
    ├── RequestError                 the request cannot be served as sent      (4xx)
    │   ├── InvalidRequestError      malformed frames, bad JSON, wrong types,   400  invalid_request
    │   │                            empty texts, unknown control words
    │   ├── UnsupportedTaskError     a task the served model does not do        404  unsupported_task
    │   │                            (rerank on an embedder, embeddings from a classifier)
    │   ├── ModelNotFoundError       a model name the server does not serve     404  model_not_found
    │   ├── AuthenticationError      missing or wrong API key / token           401  unauthorized
    │   ├── ForbiddenError           operation refused for this peer            403  forbidden
    │   ├── PayloadTooLargeError     body, text count or size over a limit      413  payload_too_large
    │   └── OverloadedError          backlog full, retry later                  429  overloaded
    ├── ServerError                  the server failed while serving           (5xx)
    │   ├── InferenceError           the model failed on a batch                500  inference_failed
    │   ├── NotReadyError            still starting, or shutting down           503  not_ready
    │   └── ServerTimeoutError       no answer in time (also a TimeoutError)    504  timeout
    └── ConfigurationError           bad flags, paths or model files at startup (also a ValueError)

`ServerTimeoutError` is also a builtin `TimeoutError`, as the 1.10.0 client raised, so code
written for the original keeps catching it. This module imports nothing beyond the standard
library: the client depends on it.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BertServingError",
    "ConfigurationError",
    "ForbiddenError",
    "InferenceError",
    "InvalidRequestError",
    "ModelNotFoundError",
    "NotReadyError",
    "OverloadedError",
    "PayloadTooLargeError",
    "RequestError",
    "ServerError",
    "ServerTimeoutError",
    "UnsupportedTaskError",
    "error_from_code",
]


class BertServingError(Exception):
    """Base of every error raised by bert-serving."""

    code = "error"
    http_status = 500

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param  # the request field at fault, when one is

    def to_dict(self) -> dict[str, str]:
        """The error as it travels on the wire (ZeroMQ error replies, HTTP bodies)."""
        out = {"code": self.code, "message": self.message, "type": type(self).__name__}
        if self.param is not None:
            out["param"] = self.param
        return out


class RequestError(BertServingError):
    """The request cannot be served as it was sent; sending it again will not help."""

    code = "bad_request"
    http_status = 400


class InvalidRequestError(RequestError):
    code = "invalid_request"
    http_status = 400


class UnsupportedTaskError(RequestError):
    """The served model does another task (embed, classify, rerank) than the request asks for."""

    code = "unsupported_task"
    http_status = 404  # the route exists, but not for this server's model


class ModelNotFoundError(RequestError):
    """The request names a model (``model``) that this server does not serve; the message lists
    the ones it does."""

    code = "model_not_found"
    http_status = 404


class AuthenticationError(RequestError):
    code = "unauthorized"
    http_status = 401


class ForbiddenError(RequestError):
    code = "forbidden"
    http_status = 403


class PayloadTooLargeError(RequestError):
    code = "payload_too_large"
    http_status = 413


class OverloadedError(RequestError):
    """The server's backlog is full; the same request may succeed later."""

    code = "overloaded"
    http_status = 429


class ServerError(BertServingError):
    code = "server_error"
    http_status = 500


class InferenceError(ServerError):
    code = "inference_failed"
    http_status = 500


class NotReadyError(ServerError):
    code = "not_ready"
    http_status = 503


class ServerTimeoutError(ServerError, TimeoutError):
    code = "timeout"
    http_status = 504


class ConfigurationError(BertServingError, ValueError):
    """A flag, path or model file is wrong; raised at startup, before anything is served."""

    code = "configuration"
    http_status = 500


_BY_CODE: dict[str, type[BertServingError]] = {
    cls.code: cls
    for cls in (
        BertServingError,
        RequestError,
        InvalidRequestError,
        UnsupportedTaskError,
        ModelNotFoundError,
        AuthenticationError,
        ForbiddenError,
        PayloadTooLargeError,
        OverloadedError,
        ServerError,
        InferenceError,
        NotReadyError,
        ServerTimeoutError,
        ConfigurationError,
    )
}


def error_from_code(code: str, message: str) -> BertServingError:
    """Rebuild the exception a server reported; unknown codes become `ServerError`."""
    return _BY_CODE.get(code, ServerError)(message)
