"""MQTT 5 and 3.1.1 on three brokers: URL options, refusals, and a simulated fleet's rollouts on each.

The simulated fleet is bench.fleet's FleetSimulator (a few devices here; `bench fleet` runs 1,000):
the operator is the real `slmops rollout` process, the registry a real HTTP server.
"""

from __future__ import annotations

import pytest

from bench.fleet import FailureRates, FleetBenchOptions, run_fleet_bench
from build_side.fleet.broker import BrokerAddress, BrokerSession
from build_side.fleet.errors import BrokerError
from edge_agent.config import MqttSettings


def test_broker_url_carries_protocol_and_roll_call() -> None:
    a = BrokerAddress.parse("mqtt://guest:pw@127.0.0.1:1884?protocol=3.1.1&roll-call=on")
    assert (a.protocol, a.roll_call, a.username, a.port) == ("3.1.1", True, "guest", 1884)
    assert str(a) == "mqtt://127.0.0.1:1884?protocol=3.1.1&roll-call=on"  # no password in messages
    assert BrokerAddress.parse("mqtt://h").protocol == "5"
    for bad in ("mqtt://h?protocol=4.0", "mqtt://h?qos=2", "mqtt://h?roll-call=maybe"):
        with pytest.raises(BrokerError, match="mqtt://h"):
            BrokerAddress.parse(bad)


def test_agent_config_takes_the_protocol_from_the_field_or_the_url() -> None:
    assert MqttSettings(protocol=5).protocol == "5"  # YAML's `protocol: 5` is a number
    assert MqttSettings(protocol="3.1.1").protocol == "3.1.1"
    s = MqttSettings(url="mqtt://guest:guest@127.0.0.1:1884?protocol=3.1.1")
    assert (s.protocol, s.username, s.password, s.port) == ("3.1.1", "guest", "guest", 1884)
    with pytest.raises(ValueError, match=r"url says protocol 5 but protocol is 3\.1\.1"):
        MqttSettings(url="mqtt://h?protocol=5", protocol="3.1.1")


def test_a_broker_that_refuses_mqtt5_gets_one_clear_line(any_broker: str) -> None:
    if "protocol=3.1.1" not in any_broker:
        pytest.skip("Mosquitto speaks MQTT 5")
    url = any_broker.replace("protocol=3.1.1", "protocol=5")
    with pytest.raises(BrokerError) as info:
        BrokerSession(url, "tx", timeout_s=5).connect()
    message = str(info.value)
    shown = str(BrokerAddress.parse(url))
    assert "\n" not in message and shown in message and "refused MQTT 5" in message, message
    assert "?protocol=3.1.1" in message  # says what to try


def test_simulated_fleet_converges_and_aborts_on_each_broker(any_broker: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    opts = FleetBenchOptions(
        broker=any_broker,
        devices=8,
        failures=FailureRates(crash=0.5),  # crashes come back and resume: all still succeed
        abort_failures=FailureRates(health=1.0),  # every canary fails: stop at wave 0
        canary=2,
        growth=2,
        max_failed=0.1,
        step_delay_s=0.01,
        garbage_devices=1,
        status_at=[30],
        workdir=tmp_path,
    )
    result = run_fleet_bench(opts, say=lambda _m: None)
    converge, abort = result.runs
    assert converge.status == "succeeded" and converge.ok, converge.problems
    assert [w["devices"] for w in converge.waves] == [2, 4, 2]
    assert all(w["outcomes"] == {"succeeded": w["devices"]} for w in converge.waves)
    assert abort.status == "rolled-back" and abort.ok, abort.problems
    assert [w["status"] for w in abort.waves] == ["rolled-back", "pending", "pending"]
    assert converge.unreadable_counted >= 2 and abort.unreadable_counted >= 2  # garbage counted, not fatal
    assert set(result.status_s) == {8, 30}
    assert result.manifest_fetches == 8 + 2  # one per install; a rollback to what still runs needs none
