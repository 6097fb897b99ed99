"""A private Mosquitto for tests that stop the broker or give it a config: own port, own process."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """`mosquitto -c <conf>` on 127.0.0.1:<port>; stop() and start() again keep the port."""

    def __init__(self, workdir: Path, port: int | None = None, extra: str = "") -> None:
        if shutil.which("mosquitto") is None:
            raise RuntimeError("mosquitto is not installed")
        self.port = port or free_port()
        self.conf = Path(workdir) / f"mosquitto-{self.port}.conf"
        # run as whoever runs the tests (as root, mosquitto would drop to a user who cannot read tmp)
        user = f"user {getpass.getuser()}\n"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\n{user}" + (extra or "allow_anonymous true\n"))
        self.log = self.conf.with_suffix(".log")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10) -> Mosquitto:
        out = open(self.log, "ab")  # noqa: SIM115 (closed with the process)
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=out, stderr=out)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.log.read_text()}") from None
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()  # a broker that dies, not one that says goodbye
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
