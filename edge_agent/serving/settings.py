"""Settings of the API server and the runtime, as they appear in the agent's YAML config."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ApiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    host: str = Field("127.0.0.1", description="bind address; anything but loopback needs api_key")
    port: int = Field(8088, ge=0, le=65535, description="0 picks a free port")
    api_key: str | None = Field(None, description="Bearer key required on /v1/* and /status when set")
    max_concurrent: int = Field(1, ge=1, description="generations running at once")
    max_queue: int = Field(8, ge=0, description="requests waiting beyond that; more get 429")
    max_body_bytes: int | None = Field(
        None,
        ge=1024,
        description="largest request body; more gets 413 before it is read. Default: sized to the "
        "served model's context window (32 bytes per token of context, plus 64 KiB)",
    )

    @model_validator(mode="after")
    def _exposed_needs_key(self) -> ApiSettings:
        if not _is_loopback(self.host) and not self.api_key:
            raise ValueError(f"api.host {self.host!r} is reachable from other machines: set api.api_key")
        return self


class RuntimeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    providers: list[str] | None = Field(
        None, description="local override: only these execution providers, in this order"
    )
    probe_prompt: str = Field("Say hello.", description="prompt the health gate asks a new version")
    probe_max_tokens: int = Field(8, ge=1)
    session_options: dict[str, bool | int | str] = Field(
        default_factory=dict,
        description="decoder session options for every model loaded (genai_config's session_options: "
        "enable_cpu_mem_arena, enable_mem_pattern, ...); one the installed onnxruntime-genai does not "
        "know fails the load with its name and the version",
    )
    memory_reserve_mb: int = Field(
        0,
        ge=0,
        description="memory left free for the device's own work: a model whose estimate would eat into "
        "it is refused before loading (the model serving keeps serving)",
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
