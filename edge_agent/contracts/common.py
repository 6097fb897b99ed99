"""Field types shared by every contract: names, versions, digests and safe relative paths."""

from __future__ import annotations

import posixpath
import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

NAME_RE = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
ID_RE = r"^[a-z0-9][a-z0-9_-]{0,63}$"
SEMVER_RE = (
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)

Name = Annotated[
    str, Field(pattern=NAME_RE, min_length=1, max_length=64, description="lowercase, digits, dashes")
]
DeviceId = Annotated[str, Field(pattern=ID_RE, description="lowercase id usable in an MQTT topic")]
SemVer = Annotated[str, Field(pattern=SEMVER_RE, description="semantic version")]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="lowercase hex sha256")]


def check_relative_path(value: str) -> str:
    """Reject any path that could leave the bundle: absolute, `..`, backslashes or not normalised."""
    if not value or value.startswith("/") or "\\" in value or re.match(r"^[A-Za-z]:", value):
        raise ValueError(f"path {value!r} is not a relative path inside the bundle")
    parts = value.split("/")
    if ".." in parts:
        raise ValueError(f"path {value!r} escapes the bundle (contains '..')")
    if posixpath.normpath(value) != value or "." in parts:
        raise ValueError(f"path {value!r} is not normalised")
    return value


RelPath = Annotated[str, AfterValidator(check_relative_path)]


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class Contract(BaseModel):
    """Base for every contract: unknown fields are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class FileEntry(Contract):
    path: RelPath
    size: int = Field(ge=0)
    sha256: Sha256
