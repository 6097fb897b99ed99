"""Broker credentials for a fleet: a Mosquitto password file and ACL so devices cannot speak for each other.

Each device gets its own user (its device id) and may only read its own and its groups' desired
state and write its own reported state, events, bench records and online state (the ACL's `pattern`
lines, `%u` being the user name). The operator user reads and writes every topic of the fleet; no
device may publish a desired state. Passwords are random; the file keeps PBKDF2-SHA512 hashes in
Mosquitto's own `$7$` format (what `mosquitto_passwd` writes), so no Mosquitto tool is needed here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from build_side.fleet.errors import FleetError
from build_side.fleet.topics import PREFIX
from edge_agent.contracts.common import ID_RE as ID_PATTERN

ITERATIONS = 101  # mosquitto_passwd's default for $7$
ID_RE = re.compile(ID_PATTERN)
DEVICE_WRITES = ("reported", "events", "bench", "state")


@dataclass
class DeviceCredential:
    device: str
    groups: list[str] = field(default_factory=list)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(24))


@dataclass
class FleetCredentials:
    fleet: str
    operator: str
    operator_password: str
    devices: list[DeviceCredential]

    def passwd(self) -> str:
        users = [(self.operator, self.operator_password)] + [(d.device, d.password) for d in self.devices]
        return "".join(f"{user}:{hash_password(password)}\n" for user, password in users)

    def acl(self) -> str:
        base = f"{PREFIX}/{self.fleet}"
        lines = [
            f"# slmops fleet {self.fleet}: written by `slmops fleet credentials`",
            "# every device: its own desired state in, its own reports out (%u is the user name)",
            f"pattern read {base}/%u/desired",
            *(f"pattern write {base}/%u/{kind}" for kind in DEVICE_WRITES),
            "",
            "# the operator: every topic of the fleet, desired states included",
            f"user {self.operator}",
            f"topic readwrite {base}/#",
        ]
        for d in self.devices:
            if d.groups:
                lines += ["", f"user {d.device}"]
                lines += [f"topic read {base}/group/{g}/desired" for g in d.groups]
        return "\n".join(lines) + "\n"

    def mosquitto_conf(self, folder: Path, port: int = 1883) -> str:
        return (
            f"# include in mosquitto.conf, or run `mosquitto -c {folder / 'mosquitto.conf'}`\n"
            f"listener {port}\n"
            "allow_anonymous false\n"
            f"password_file {folder / 'passwd'}\n"
            f"acl_file {folder / 'acl'}\n"
        )

    def summary(self) -> dict:
        """Who gets which password (the only place the passwords are written in clear)."""
        return {
            "fleet": self.fleet,
            "operator": {"username": self.operator, "password": self.operator_password},
            "devices": [
                {"device": d.device, "groups": d.groups, "username": d.device, "password": d.password}
                for d in self.devices
            ],
        }


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    return f"$7${ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def parse_device(spec: str) -> DeviceCredential:
    """`kiosk-7` or `kiosk-7:shops,eu` (the groups whose desired state the device follows)."""
    device, _, groups = spec.partition(":")
    names = [device, *filter(None, groups.split(","))]
    for name in names:
        if not ID_RE.match(name):
            raise FleetError(f"{name!r} is not a device or group id (lowercase letters, digits, - and _)")
    return DeviceCredential(device, names[1:])


def make_credentials(fleet: str, devices: list[str], operator: str = "operator") -> FleetCredentials:
    creds = [parse_device(spec) for spec in devices]
    ids = [c.device for c in creds]
    if not ID_RE.match(fleet):
        raise FleetError(f"{fleet!r} is not a fleet id")
    if len(set(ids)) != len(ids) or operator in ids:
        raise FleetError("device ids must be unique and differ from the operator's user name")
    return FleetCredentials(fleet, operator, secrets.token_urlsafe(24), creds)


def write_credentials(creds: FleetCredentials, folder: Path, port: int = 1883) -> list[Path]:
    """passwd, acl and mosquitto.conf for the broker; credentials.json (mode 0600) for the people who
    configure the devices (`mqtt.username`/`mqtt.password` in each agent.yaml) and the operator."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text, mode in (
        ("passwd", creds.passwd(), 0o600),
        ("acl", creds.acl(), 0o644),
        ("mosquitto.conf", creds.mosquitto_conf(folder, port), 0o644),
        ("credentials.json", json.dumps(creds.summary(), indent=2) + "\n", 0o600),
    ):
        path = folder / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(path, mode)
        written.append(path)
    return written


__all__ = ["DeviceCredential", "FleetCredentials", "hash_password", "make_credentials", "write_credentials"]
