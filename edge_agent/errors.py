"""The one exception tree of slmops. Library code raises these; the CLIs turn them into messages.

SlmopsError
├── ContractError        a document does not match its contract (bad JSON, wrong field, unsafe path)
├── SignatureError       missing, malformed, untrusted or wrong signature
├── BundleError          a bundle on disk does not match its manifest
│   ├── MissingFileError
│   ├── SizeMismatchError
│   └── ChecksumMismatchError
├── KeyFileError         a key file that cannot be read or written
├── SourceError          a model source that cannot be prepared
├── ModelRuntimeError    a model that cannot be loaded or run (bad files, provider failure)
│   └── ProviderUnavailableError   an execution provider that is missing or fails to start
├── HealthCheckError     a new version that does not answer its probe in time
├── IncompatibleError    nothing in a bundle suits this device (precision, provider, memory)
├── DistillError         a distillation stage that cannot go on (teacher endpoint, data, student shape)
├── ConfigError          the agent's config file or environment override is invalid
├── DeployError          a deployment step failed on the device (the agent maps each to an ErrorCode)
│   ├── DownloadError            registry unreachable, 4xx, or retries spent (`transient` says which)
│   ├── DiskFullError            not enough free space for the download, or ENOSPC while writing
│   └── MemoryInsufficientError  the chosen variant needs more memory than the device has free
├── RequestError         an API request the model cannot serve (answered with a 4xx, never a 500)
│   ├── UnknownModelError        no such model (or version) is being served
│   ├── UnknownAdapterError      the model has no such LoRA adapter
│   ├── ContextLengthError       prompt plus requested tokens exceed the context window
│   ├── OverloadedError          the request queue is full (429, retry later)
│   ├── RequestTooLargeError     the request body is over `api.max_body_bytes` (413)
│   ├── ClientGoneError          the client hung up while its request waited for a slot
│   └── NotReadyError            no model is loaded yet (503, retry later)
└── BuildError           the build side could not make or publish something
    ├── ConvertError             the model builder or the quality evaluation failed
    ├── RecipeError              a pipeline recipe is invalid (names the key and the line)
    ├── StageUnavailableError    a pipeline stage whose module is not installed
    ├── PublishConflictError     name@version is already published with different content
    ├── RegistryError            a registry that cannot be read or written
    ├── DataError                a training record that cannot be used (names the file, line and field)
    └── TrainingError            a fine-tuning run that cannot start or go on (method, checkpoint, export)
"""

from __future__ import annotations

from pathlib import Path


class SlmopsError(Exception):
    """Base of every error slmops raises on purpose. `str(err)` is a message for a person."""


class ContractError(SlmopsError):
    def __init__(self, where: str | Path, problem: str) -> None:
        self.where = str(where)
        self.problem = problem
        super().__init__(f"{where}: {problem}")


class SignatureError(SlmopsError):
    pass


class BundleError(SlmopsError):
    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class MissingFileError(BundleError):
    pass


class SizeMismatchError(BundleError):
    pass


class ChecksumMismatchError(BundleError):
    pass


class KeyFileError(SlmopsError):
    pass


class SourceError(SlmopsError):
    pass


class ModelRuntimeError(SlmopsError):
    pass


class ProviderUnavailableError(ModelRuntimeError):
    pass


class HealthCheckError(SlmopsError):
    pass


class IncompatibleError(SlmopsError):
    pass


class ConfigError(SlmopsError):
    pass


class DistillError(SlmopsError):
    pass


class DeployError(SlmopsError):
    pass


class DownloadError(DeployError):
    def __init__(self, message: str, transient: bool = False) -> None:
        self.transient = transient
        super().__init__(message)


class DiskFullError(DeployError):
    pass


class MemoryInsufficientError(DeployError):
    pass


class RequestError(SlmopsError):
    """`param` names the request field at fault, as OpenAI error bodies do."""

    def __init__(self, message: str, param: str | None = None) -> None:
        self.param = param
        super().__init__(message)


class UnknownModelError(RequestError):
    pass


class UnknownAdapterError(RequestError):
    pass


class ContextLengthError(RequestError):
    pass


class OverloadedError(RequestError):
    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class RequestTooLargeError(RequestError):
    pass


class ClientGoneError(RequestError):
    pass


class NotReadyError(RequestError):
    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class BuildError(SlmopsError):
    pass


class ConvertError(BuildError):
    pass


class RecipeError(BuildError):
    def __init__(self, where: str | Path, problem: str) -> None:
        self.where = str(where)
        self.problem = problem
        super().__init__(f"{where}: {problem}")


class StageUnavailableError(BuildError):
    pass


class PublishConflictError(BuildError):
    pass


class RegistryError(BuildError):
    pass


class DataError(BuildError):
    """A training record that cannot be used; the message says where: `file:line: field: problem`."""

    def __init__(self, file: str | Path, line: int | None, field: str | None, problem: str) -> None:
        self.file, self.line, self.field, self.problem = str(file), line, field, problem
        where = f"{file}:{line}" if line is not None else str(file)
        super().__init__(f"{where}: {field}: {problem}" if field else f"{where}: {problem}")


class TrainingError(BuildError):
    pass


__all__ = [
    "BuildError",
    "BundleError",
    "ChecksumMismatchError",
    "ClientGoneError",
    "ConfigError",
    "ContextLengthError",
    "ContractError",
    "ConvertError",
    "DataError",
    "DeployError",
    "DiskFullError",
    "DistillError",
    "DownloadError",
    "HealthCheckError",
    "IncompatibleError",
    "KeyFileError",
    "MemoryInsufficientError",
    "MissingFileError",
    "ModelRuntimeError",
    "NotReadyError",
    "OverloadedError",
    "ProviderUnavailableError",
    "PublishConflictError",
    "RecipeError",
    "RegistryError",
    "RequestError",
    "RequestTooLargeError",
    "SignatureError",
    "SizeMismatchError",
    "SlmopsError",
    "SourceError",
    "StageUnavailableError",
    "TrainingError",
    "UnknownAdapterError",
    "UnknownModelError",
]
