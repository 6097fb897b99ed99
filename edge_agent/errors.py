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
└── IncompatibleError    nothing in a bundle suits this device (precision, provider, memory)
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


__all__ = [
    "BundleError",
    "ChecksumMismatchError",
    "ContractError",
    "HealthCheckError",
    "IncompatibleError",
    "KeyFileError",
    "MissingFileError",
    "ModelRuntimeError",
    "ProviderUnavailableError",
    "SignatureError",
    "SizeMismatchError",
    "SlmopsError",
    "SourceError",
]
