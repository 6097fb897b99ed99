"""What the dashboard serves and where: one typed config, validated once (flags build it).

Bound to loopback it needs no key; bound anywhere else it refuses to start without one, the rule the
agent's API follows (edge_agent/serving/settings.py), because fleet state is nobody else's business.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class DashboardSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    broker: str = Field(description="MQTT broker URL whose retained state and live messages are shown")
    fleet: str = Field(description="fleet id")
    db: str = Field(
        description="the operator's history database (events, bench records, rollouts): a path or a database URL"
    )
    registry: str = Field(description="registry directory or URL for the Registry page")
    host: str = Field("127.0.0.1", description="bind address; anything but loopback needs key")
    port: int = Field(8090, ge=0, le=65535, description="0 picks a free port")
    key: str | None = Field(None, description="required (Bearer, cookie or ?key=) when set")
    tick_s: float = Field(0.2, gt=0, le=5, description="how often live changes are gathered and pushed")

    @field_validator("db", mode="before")
    @classmethod
    def _path_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, Path) else value

    @model_validator(mode="after")
    def _exposed_needs_key(self) -> DashboardSettings:
        if not is_loopback(self.host) and not self.key:
            raise ValueError(f"host {self.host!r} is reachable from other machines: give a key (--key)")
        return self


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


__all__ = ["DashboardSettings", "is_loopback"]
