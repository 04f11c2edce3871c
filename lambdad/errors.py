"""AWS Lambda errors, one class per AWS error code.

Every error knows its HTTP status and how AWS spells its message field
(``Message`` for most shapes, ``message`` for a dozen of them). One renderer in
``lambdad.api`` turns any of them into AWS's response body::

    LambdaError
    ├── ValidationException                    400  (no Type; message)
    ├── InvalidParameterValueException         400  message
    │   └── UntypedInvalidParameterValueException  400  (no Type; message)
    ├── InvalidRequestContentException         400  message
    ├── ResourceConflictException              409  message
    ├── SnapStartNotReadyException             409  Message
    ├── SnapStartException                     400  Message
    ├── PreconditionFailedException            412  message
    ├── RequestTooLargeException               413  message
    ├── RequestEntityTooLargeException         413  (no Type; message)
    ├── CodeStorageExceededException           400  message
    ├── TooManyRequestsException               429  message, Reason, Retry-After
    ├── UnsupportedMediaTypeException          415  message
    ├── ResourceNotReadyException              502  message
    ├── ResourceNotFoundException              404  Message
    ├── ProvisionedConcurrencyConfigNotFoundException  404  message
    ├── AccessDeniedException                  403  Message
    ├── ServiceException                       500  Message
    ├── UnrecognizedClientException            403  message
    ├── InvalidSignatureException              403  message
    ├── MissingAuthenticationTokenException    403  message
    └── UnknownOperationException              404  (route not found)
"""

from __future__ import annotations

from typing import ClassVar


class LambdaError(Exception):
    """Base of every error that is answered to an API client."""

    code: ClassVar[str] = "ServiceException"
    status: ClassVar[int] = 500
    # Name of the message member in the JSON body ("Message" or "message").
    message_field: ClassVar[str] = "Message"
    # Whether the body carries "Type": "User" (AWS omits it for some errors).
    user_type: ClassVar[bool] = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {}
        if self.user_type:
            body["Type"] = "User"
        body[self.message_field] = self.message
        return body

    def headers(self) -> dict[str, str]:
        return {"x-amzn-ErrorType": self.code}


class ServiceException(LambdaError):
    code = "ServiceException"
    status = 500
    user_type = False

    def body(self) -> dict[str, object]:
        return {"Type": "Service", "Message": self.message}


class ValidationException(LambdaError):
    code = "ValidationException"
    status = 400
    message_field = "message"
    user_type = False


class InvalidParameterValueException(LambdaError):
    code = "InvalidParameterValueException"
    status = 400
    message_field = "message"


class UntypedInvalidParameterValueException(InvalidParameterValueException):
    """The same error as a few of AWS's checks send it: without "Type" (e.g. the limits of
    reserved concurrency, "$LATEST is not supported for an alias pointing to ...")."""

    user_type = False


class InvalidRequestContentException(LambdaError):
    code = "InvalidRequestContentException"
    status = 400
    message_field = "message"


class ResourceConflictException(LambdaError):
    code = "ResourceConflictException"
    status = 409
    message_field = "message"


class SnapStartNotReadyException(LambdaError):
    """Invoke of a SnapStart version whose snapshot is still being taken (State Pending)."""

    code = "SnapStartNotReadyException"
    status = 409


class SnapStartException(LambdaError):
    """Invoke whose restored environment's after-restore hooks failed."""

    code = "SnapStartException"
    status = 400


class PreconditionFailedException(LambdaError):
    code = "PreconditionFailedException"
    status = 412
    message_field = "message"


class RequestTooLargeException(LambdaError):
    code = "RequestTooLargeException"
    status = 413
    message_field = "message"


class RequestEntityTooLargeException(LambdaError):
    code = "RequestEntityTooLargeException"
    status = 413
    message_field = "message"
    user_type = False


class CodeStorageExceededException(LambdaError):
    code = "CodeStorageExceededException"
    status = 400
    message_field = "message"


class UnsupportedMediaTypeException(LambdaError):
    code = "UnsupportedMediaTypeException"
    status = 415
    message_field = "message"


class ResourceNotReadyException(LambdaError):
    code = "ResourceNotReadyException"
    status = 502
    message_field = "message"


class ResourceNotFoundException(LambdaError):
    code = "ResourceNotFoundException"
    status = 404


class ProvisionedConcurrencyConfigNotFoundException(LambdaError):
    code = "ProvisionedConcurrencyConfigNotFoundException"
    status = 404
    message_field = "message"


class AccessDeniedException(LambdaError):
    code = "AccessDeniedException"
    status = 403

    @classmethod
    def no_policy(cls, caller: str, action: str, resource: str) -> AccessDeniedException:
        """AWS's refusal of an action on another account's resource that no resource-based
        policy allows (the caller acts as its account's root here)."""
        return cls(
            f"User: arn:aws:iam::{caller}:root is not authorized to perform: {action} on "
            f"resource: {resource} because no resource-based policy allows the {action} action"
        )


class UnrecognizedClientException(LambdaError):
    code = "UnrecognizedClientException"
    status = 403
    message_field = "message"
    user_type = False


class InvalidSignatureException(LambdaError):
    code = "InvalidSignatureException"
    status = 403
    message_field = "message"
    user_type = False


class MissingAuthenticationTokenException(LambdaError):
    code = "MissingAuthenticationTokenException"
    status = 403
    message_field = "message"
    user_type = False


class UnknownOperationException(LambdaError):
    code = "UnknownOperationException"
    status = 404
    user_type = False


class TooManyRequestsException(LambdaError):
    code = "TooManyRequestsException"
    status = 429
    message_field = "message"

    def __init__(self, message: str, reason: str, retry_after_seconds: int = 1) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_seconds = retry_after_seconds

    def body(self) -> dict[str, object]:
        return {"Reason": self.reason, "Type": "User", "message": self.message}

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "Retry-After": str(self.retry_after_seconds)}
