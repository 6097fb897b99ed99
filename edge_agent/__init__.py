"""slmops edge agent: keeps a device on its desired model, safely, and serves it.

Light by design: it never imports torch, transformers, peft or the build side.
"""

from edge_agent.bundle_check import BundleReport, verify_bundle
from edge_agent.errors import (
    BundleError,
    ChecksumMismatchError,
    ContractError,
    KeyFileError,
    MissingFileError,
    SignatureError,
    SizeMismatchError,
    SlmopsError,
    SourceError,
)
from edge_agent.signing import SigningKey, TrustedKeys, VerifyKey, canonical_json

__version__ = "0.1.0"

__all__ = [
    "BundleError",
    "BundleReport",
    "ChecksumMismatchError",
    "ContractError",
    "KeyFileError",
    "MissingFileError",
    "SignatureError",
    "SigningKey",
    "SizeMismatchError",
    "SlmopsError",
    "SourceError",
    "TrustedKeys",
    "VerifyKey",
    "__version__",
    "canonical_json",
    "verify_bundle",
]
