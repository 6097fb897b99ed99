"""The agent's config: YAML with errors that name key and line, env overrides, resolved paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import load_config
from edge_agent.errors import ConfigError

GOOD = """\
device_id: dev-1
fleet: lab
groups: [eu]
mqtt:
  url: mqtts://broker.example:8884
  username: agent
  password: s3cret
  tls:
    ca: certs/ca.pem
registry_url: http://registry.local:8080/base
trusted_keys: [keys]
state_dir: state
limits:
  keep_versions: 3
log:
  json: true
  level: debug
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "agent.yaml"
    p.write_text(text)
    return p


def test_a_good_config_loads_with_paths_relative_to_its_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD), environ={})
    assert cfg.mqtt and (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.use_tls) == ("broker.example", 8884, True)
    assert cfg.mqtt.tls.ca == tmp_path / "certs" / "ca.pem"
    assert cfg.state_dir == tmp_path / "state" and cfg.trusted_keys == [tmp_path / "keys"]
    assert cfg.registry_url == "http://registry.local:8080/base/"
    assert cfg.limits.keep_versions == 3 and cfg.log.json_ and cfg.log.level == "DEBUG"
    assert cfg.redacted()["mqtt"]["password"] == "***"


def test_errors_name_the_key_and_the_line(tmp_path: Path) -> None:
    bad = GOOD.replace("keep_versions: 3", "keep_versions: lots").replace("mqtts://", "ftp://")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, bad), environ={})
    text = str(err.value)
    assert f"{tmp_path / 'agent.yaml'}:14: limits.keep_versions" in text
    assert ":5: mqtt.url" in text


def test_unknown_keys_and_missing_sources_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r":1: devic_id: Extra inputs"):
        load_config(write(tmp_path, "devic_id: x\n" + GOOD), environ={})
    no_source = "device_id: a\nfleet: b\nregistry_url: http://r/\ntrusted_keys: [k]\n"
    with pytest.raises(ConfigError, match="set `mqtt`"):
        load_config(write(tmp_path, no_source), environ={})


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"agent.yaml:2: not valid YAML"):
        load_config(write(tmp_path, "device_id: a\nfleet: b: c\ngroups: []\n"), environ={})


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    env = {
        "EDGE_AGENT_DEVICE_ID": "dev-2",
        "EDGE_AGENT_MQTT__URL": "mqtt://10.0.0.1",
        "EDGE_AGENT_GROUPS": "[eu, canary]",
        "EDGE_AGENT_LIMITS__MIN_FREE_DISK_MB": "5",
        "EDGE_AGENT_CONFIG": "/ignored.yaml",
    }
    cfg = load_config(write(tmp_path, GOOD), environ=env)
    assert cfg.device_id == "dev-2" and cfg.groups == ["eu", "canary"]
    assert cfg.mqtt and cfg.mqtt.port == 1883 and cfg.mqtt.username == "agent"
    assert cfg.limits.min_free_disk_mb == 5
    with pytest.raises(
        ConfigError, match=r"environment EDGE_AGENT_LIMITS__KEEP_VERSIONS: limits\.keep_versions"
    ):
        load_config(write(tmp_path, GOOD), environ={"EDGE_AGENT_LIMITS__KEEP_VERSIONS": "0"})


def test_the_shipped_example_is_valid(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "edge_agent" / "agent.example.yaml"
    cfg = load_config(example, environ={})
    assert cfg.device_id and cfg.mqtt
