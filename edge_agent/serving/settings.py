"""Settings of the API server and the runtime, as they appear in the agent's YAML config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ApiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    host: str = Field("127.0.0.1", description="bind address; anything but loopback needs api_key")
    port: int = Field(8088, ge=0, le=65535, description="0 picks a free port")
    api_key: str | None = Field(None, description="Bearer key required on /v1/* when set")
    max_concurrent: int = Field(1, ge=1, description="generations running at once")
    max_queue: int = Field(8, ge=0, description="requests waiting beyond that; more get 429")


class RuntimeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    providers: list[str] | None = Field(None, description="local override of the provider order")
    probe_prompt: str = Field("Say hello.", description="prompt the health gate asks a new version")
    probe_max_tokens: int = Field(8, ge=1)
