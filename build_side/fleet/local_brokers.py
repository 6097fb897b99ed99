"""The three MQTT brokers slmops is tried on, started on this machine when they are not running.

Ports: $SLMOPS_RABBITMQ_MQTT_PORT and $SLMOPS_NATS_MQTT_PORT override 1884 and 1885.

mosquitto  mqtt://127.0.0.1:1883                                   MQTT 5 (and 3.1.1)
rabbitmq   mqtt://guest:guest@127.0.0.1:1884?protocol=3.1.1&roll-call=on
           RabbitMQ's MQTT plugin, enabled on a running node without a restart: the listener is set
           before the plugin starts (its default 1883 is Mosquitto's). It delivers retained messages
           only to subscriptions without wildcards, hence the roll call (docs/design.md).
nats       mqtt://127.0.0.1:1885?protocol=3.1.1
           nats-server with JetStream (MQTT needs it for sessions and retained messages), from a
           config file of our own, with its own client port and store directory.

Tests, `.ci/run` and `bench fleet` use them; `python -m build_side.fleet.local_brokers` starts all
three and prints their URLs.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from build_side.fleet.errors import BrokerError
from build_side.fleet.local_agent import broker_listening

HOST = "127.0.0.1"
RABBITMQ_MQTT_PORT = int(os.environ.get("SLMOPS_RABBITMQ_MQTT_PORT") or 1884)
NATS_MQTT_PORT = int(os.environ.get("SLMOPS_NATS_MQTT_PORT") or 1885)
NATS_CLIENT_PORT = 4225  # the packaged nats-server service holds 4222


@dataclass(frozen=True)
class LocalBroker:
    name: str
    url: str
    port: int
    protocol: str
    process: subprocess.Popen[bytes] | None = None  # set when we started it (and so stop it)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def _wait_port(port: int, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if broker_listening(HOST, port, 0.5):
            return
        time.sleep(0.2)
    raise BrokerError(f"{what} did not start listening on {HOST}:{port} within {timeout_s:.0f} s")


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def mosquitto() -> LocalBroker:
    if not broker_listening(HOST, 1883):
        if not shutil.which("mosquitto"):
            raise BrokerError("no MQTT broker on 127.0.0.1:1883 and mosquitto is not installed")
        subprocess.run(["mosquitto", "-d", "-c", "/etc/mosquitto/mosquitto.conf"], check=True)
        _wait_port(1883, 5, "mosquitto")
    return LocalBroker("mosquitto", f"mqtt://{HOST}:1883", 1883, "5")


def rabbitmq(port: int = RABBITMQ_MQTT_PORT) -> LocalBroker:
    url = f"mqtt://guest:guest@{HOST}:{port}?protocol=3.1.1&roll-call=on"
    if broker_listening(HOST, port):
        return LocalBroker("rabbitmq", url, port, "3.1.1")
    if not shutil.which("rabbitmqctl"):
        raise BrokerError("RabbitMQ is not installed (rabbitmqctl not found)")
    if subprocess.run(["rabbitmqctl", "-q", "ping"], capture_output=True, timeout=60).returncode != 0:
        # Start the node with the MQTT listener already on our port (1883 is Mosquitto's).
        env = os.environ | {
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": f'-rabbitmq_mqtt tcp_listeners [{{"{HOST}",{port}}}]'
        }
        # One descriptor per MQTT connection: the usual soft limit of 1024 runs out near 1,000
        # devices, and then RabbitMQ's own monitors crash with the listener (seen here).
        subprocess.run(["rabbitmq-server", "-detached"], env=env, check=True, preexec_fn=_raise_nofile)
        subprocess.run(["rabbitmqctl", "-q", "wait", "--timeout", "60", "--pid", "0"], capture_output=True)
        for _ in range(60):
            if subprocess.run(["rabbitmqctl", "-q", "ping"], capture_output=True).returncode == 0:
                break
            time.sleep(1)
    listener = f'application:load(rabbitmq_mqtt), application:set_env(rabbitmq_mqtt, tcp_listeners, [{{"{HOST}", {port}}}]).'
    steps = [["rabbitmqctl", "eval", listener], ["rabbitmq-plugins", "enable", "rabbitmq_mqtt"]]
    for argv in steps:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"{' '.join(argv[:2])} did not finish in 120 s (is the node healthy?)") from exc
        if done.returncode != 0:
            raise BrokerError(f"{' '.join(argv[:2])} failed: {(done.stderr or done.stdout).strip()[-300:]}")
    _wait_port(port, 30, "RabbitMQ's MQTT plugin")
    return LocalBroker("rabbitmq", url, port, "3.1.1")


def nats(port: int = NATS_MQTT_PORT, workdir: Path | None = None) -> LocalBroker:
    url = f"mqtt://{HOST}:{port}?protocol=3.1.1"
    if broker_listening(HOST, port):
        return LocalBroker("nats", url, port, "3.1.1")
    if not shutil.which("nats-server"):
        raise BrokerError("nats-server is not installed")
    workdir = workdir or Path(tempfile.mkdtemp(prefix="slmops-nats-"))
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nats.conf"
    conf.write_text(
        f"server_name: slmops_nats_{port}\n"
        f"host: {HOST}\nport: {NATS_CLIENT_PORT if port == NATS_MQTT_PORT else 0}\n"
        f'jetstream {{ store_dir: "{workdir / "jetstream"}" }}\n'
        f"mqtt {{ host: {HOST}, port: {port} }}\n"
    )
    log = (workdir / "nats.log").open("ab")
    proc = subprocess.Popen(["nats-server", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_port(port, 15, "nats-server")
    except BrokerError:
        proc.kill()
        raise
    return LocalBroker("nats", url, port, "3.1.1", proc)


STARTERS = {"mosquitto": mosquitto, "rabbitmq": rabbitmq, "nats": nats}


def main(argv: list[str]) -> int:
    """Start the named brokers (all three by default), detached, and print their URLs."""
    for name in argv or list(STARTERS):
        try:
            broker = STARTERS[name]()
        except (BrokerError, KeyError) as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 1
        print(f"{broker.name:10} {broker.url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))


__all__ = ["STARTERS", "LocalBroker", "mosquitto", "nats", "rabbitmq"]
