"""The agent's configuration: one typed model, read from YAML, then overridden by the environment.

Order: defaults (below, each commented) < the YAML file < `EDGE_AGENT_<KEY>` variables (nested keys
joined by `__`, e.g. `EDGE_AGENT_MQTT__URL`, `EDGE_AGENT_LIMITS__KEEP_VERSIONS`; a value starting with
`[` or `{` is read as YAML, so `EDGE_AGENT_GROUPS='[lab, eu]'` works). It is validated once, and every
error names the key and the line of the file (or the variable) it came from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge_agent.contracts.common import DeviceId
from edge_agent.errors import ConfigError
from edge_agent.serving.settings import ApiSettings, RuntimeSettings
from edge_agent.transports.mqtt_protocol import MqttProtocol, normalize_protocol, protocol_from_url

ENV_PREFIX = "EDGE_AGENT_"
ENV_SKIP = {"CONFIG"}  # EDGE_AGENT_CONFIG names the file; it is not a setting


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MqttTls(Section):
    ca: Path | None = Field(None, description="CA bundle that signed the broker's certificate")
    cert: Path | None = Field(None, description="client certificate (mutual TLS)")
    key: Path | None = Field(None, description="client private key (mutual TLS)")
    insecure: bool = Field(False, description="skip hostname verification (test brokers only)")


class MqttSettings(Section):
    url: str = Field(
        "mqtt://127.0.0.1:1883",
        description="mqtt://[user:pass@]host:port or mqtts://...; `?protocol=3.1.1` as the field below",
    )
    protocol: MqttProtocol = Field(
        "5", description='"5" or "3.1.1" (RabbitMQ\'s and NATS\'s MQTT speak 3.1.1 only)'
    )
    username: str | None = None
    password: str | None = None
    tls: MqttTls = Field(default_factory=MqttTls)
    keepalive: int = Field(30, ge=5, description="seconds between pings; the broker's will fires after 1.5x")
    session_expiry_s: int = Field(
        86400, ge=0, description="the broker keeps our subscriptions and QoS 1 messages this long"
    )
    reconnect_min_s: float = Field(1.0, gt=0, description="first reconnect delay")
    reconnect_max_s: float = Field(
        10.0, gt=0, description="longest reconnect delay; each delay is drawn with jitter up to its bound"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"{value!r} is not mqtt://host[:port] or mqtts://host[:port]")
        protocol_from_url(value)  # a bad ?protocol= fails here, naming the key
        return value

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, value: object) -> str:
        return normalize_protocol(value)  # YAML reads `protocol: 5` as a number

    @model_validator(mode="after")
    def _from_url(self) -> MqttSettings:
        """`?protocol=` and `user:pass@` in the URL fill the fields; a contradiction is an error."""
        in_url = protocol_from_url(self.url)
        if in_url and "protocol" in self.model_fields_set and in_url != self.protocol:
            raise ValueError(f"url says protocol {in_url} but protocol is {self.protocol}")
        if in_url:
            self.protocol = in_url  # type: ignore[assignment]
        parts = urlsplit(self.url)
        if parts.username and not self.username:
            self.username = unquote(parts.username)
            self.password = unquote(parts.password) if parts.password else self.password
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def use_tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"


class HttpPollSettings(Section):
    channel: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="reads channels/<channel>.json")
    interval_s: float = Field(60.0, gt=0, description="seconds between polls (with 10% jitter)")


class Limits(Section):
    keep_versions: int = Field(2, ge=1, description="installed versions kept besides the active one")
    min_free_disk_mb: int = Field(64, ge=0, description="free space left after a download, at least")
    state_reserve_kb: int = Field(
        1024,
        ge=0,
        description="a file of this size in state_dir, released when the disk fills so the journal, "
        "agent state and events can still be written (FAILED DISK_FULL instead of a crash)",
    )
    download_retries: int = Field(5, ge=0, description="retries of one file on transient errors")
    download_timeout_s: float = Field(30.0, gt=0, description="connect/read timeout of one request")
    backoff_initial_s: float = Field(1.0, gt=0, description="first retry delay; doubles, with jitter")
    backoff_max_s: float = Field(60.0, gt=0)
    max_step_entries: int = Field(
        3, ge=1, description="times one step may be (re)entered after crashes before it counts as failed"
    )


class LogSettings(Section):
    json_: bool = Field(False, alias="json", description="one JSON object per line (for journald/Loki)")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class AgentConfig(Section):
    device_id: DeviceId
    fleet: DeviceId
    groups: list[DeviceId] = Field(default_factory=list, description="group ids this device follows")
    mqtt: MqttSettings | None = Field(None, description="absent: no broker (use http_poll)")
    registry_url: str = Field(description="base URL of the registry; relative manifest URLs resolve here")
    http_poll: HttpPollSettings | None = Field(None, description="absent: desired state comes over MQTT")
    trusted_keys: list[Path] = Field(min_length=1, description="public key files or directories of *.pub")
    state_dir: Path = Field(Path("/var/lib/edge-agent"), description="store, journal, events")
    limits: Limits = Field(default_factory=Limits)
    api: ApiSettings = Field(default_factory=ApiSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @field_validator("registry_url")
    @classmethod
    def _registry(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value.rstrip("/") + "/"

    @model_validator(mode="after")
    def _a_source(self) -> AgentConfig:
        if self.mqtt is None and self.http_poll is None:
            raise ValueError("set `mqtt` (a broker) or `http_poll` (a channel), or both")
        return self

    def resolved(self, base: Path) -> AgentConfig:
        """Relative paths are relative to the config file's folder, not to where the agent started."""

        def fix(p: Path | None) -> Path | None:
            return None if p is None else (p if p.is_absolute() else (base / p).resolve())

        copy = self.model_copy(deep=True)
        copy.state_dir = fix(copy.state_dir)  # type: ignore[assignment]
        copy.trusted_keys = [fix(p) for p in copy.trusted_keys]  # type: ignore[misc]
        if copy.mqtt:
            tls = copy.mqtt.tls
            tls.ca, tls.cert, tls.key = fix(tls.ca), fix(tls.cert), fix(tls.key)
        return copy

    def redacted(self) -> dict[str, Any]:
        """The resolved config for the start-up log: secrets replaced."""
        data = self.model_dump(mode="json", by_alias=True)
        if data.get("mqtt") and data["mqtt"].get("password"):
            data["mqtt"]["password"] = "***"
        if data["api"].get("api_key"):
            data["api"]["api_key"] = "***"
        return data


def env_overrides(environ: dict[str, str] | None = None) -> tuple[dict[str, Any], dict[tuple, str]]:
    """`EDGE_AGENT_*` variables as a nested dict, and which variable set each key path."""
    environ = dict(os.environ if environ is None else environ)
    out: dict[str, Any] = {}
    origin: dict[tuple, str] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name[len(ENV_PREFIX) :] in ENV_SKIP:
            continue
        path = tuple(p.lower() for p in name[len(ENV_PREFIX) :].split("__"))
        if path[0] not in AgentConfig.model_fields:
            continue
        value: Any = raw
        if raw.strip().startswith(("[", "{")):
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError as exc:
                raise ConfigError(f"environment {name}: not valid YAML ({exc})") from exc
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment {name}: {part} is set as a value and as a section")
        node[path[-1]] = value
        origin[path] = name
    return out, origin


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """Line (1-based) of the deepest YAML node on the error's path."""
    line = None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for key_node, value_node in node.value:
                if key_node.value == str(part):
                    nxt, line = value_node, key_node.start_mark.line + 1
                    break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            node = None
    return line


def _describe(exc: ValidationError, path: Path, root: yaml.Node | None, origin: dict[tuple, str]) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc) or "(document)"
        env = next((v for k, v in origin.items() if loc[: len(k)] == k), None)
        if env:
            where = f"environment {env}"
        else:
            line = _line_of(root, loc) if loc else None
            where = f"{path}:{line}" if line else str(path)
        lines.append(f"{where}: {key}: {err['msg']}")
    return "invalid agent config\n  " + "\n  ".join(lines)


def load_config(path: Path, environ: dict[str, str] | None = None) -> AgentConfig:
    """Read, override from the environment, validate, resolve paths. Raises ConfigError."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror})") from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of keys to values")
    env, origin = env_overrides(environ)
    try:
        config = AgentConfig.model_validate(_merge(data, env))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, root, origin)) from exc
    return config.resolved(path.resolve().parent)


__all__ = [
    "AgentConfig",
    "HttpPollSettings",
    "Limits",
    "LogSettings",
    "MqttSettings",
    "MqttTls",
    "env_overrides",
    "load_config",
]
