"""The parent's side of a case's child process (protocol in bench.child).

A reader thread turns the child's stdout into a queue of events, so a library that prints to stdout
can never wedge the conversation, and every wait has a limit (`timeout_s` per step: load, one pass,
finish): a hung case is killed and reported, and the comparison carries on with the others.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path

from bench.child import CaseJob, CaseResult, QualityJob
from edge_agent.contracts.bench_record import Summary


class CaseProcess:
    def __init__(self, job: CaseJob, workdir: Path, timeout_s: float) -> None:
        stem = "job-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in job.case.label)
        self.job_path = workdir / f"{stem}.json"
        self.result_path = workdir / f"{stem}.result.json"
        self.stderr_path = workdir / f"{stem}.stderr"
        self.job_path.write_text(job.model_dump_json(by_alias=True))
        self.result_path.unlink(missing_ok=True)
        self.label = job.case.label
        self.timeout_s = timeout_s
        self.error: str | None = None
        self._events: queue.Queue[dict | None] = queue.Queue()
        cmd = [sys.executable, "-m", "bench.child", str(self.job_path), str(self.result_path)]
        with open(self.stderr_path, "w") as stderr:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True, bufsize=1
            )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                try:
                    self._events.put(json.loads(line))
                except json.JSONDecodeError:
                    continue
        self._events.put(None)  # end of stream

    def _expect(self, wanted: str) -> bool:
        """Wait for the `wanted` event; anything else (an error, an exit, the deadline) fails the case."""
        if self.error:
            return False
        try:
            event = self._events.get(timeout=self.timeout_s)
        except queue.Empty:
            self.proc.kill()
            self.error = f"timed out after {self.timeout_s:.0f} s"
            return False
        if event is not None and event.get("event") == wanted:
            return True
        self.proc.wait()
        self.error = self._failure()
        return False

    def _send(self, **cmd: object) -> bool:
        if self.error:
            return False
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.proc.wait()
            self.error = self._failure()
            return False
        return True

    def _failure(self) -> str:
        if self.result_path.is_file():
            result = CaseResult.model_validate_json(self.result_path.read_text())
            if result.error:
                return result.error
        tail = self.stderr_path.read_text()[-1500:].strip()
        return f"child exited with status {self.proc.returncode}: {tail}"

    def wait_ready(self) -> bool:
        return self._expect("ready")

    def run(self, scenario: str, warmup: bool) -> bool:
        """One pass over the scenario's prompts (kept unless it is a warm-up)."""
        return self._send(cmd="run", scenario=scenario, warmup=warmup) and self._expect("ran")

    def finish(self, bandwidth: Summary | None, quality: QualityJob | None) -> CaseResult:
        payload = {
            "bandwidth": bandwidth.model_dump() if bandwidth else None,
            "quality": quality.model_dump(mode="json") if quality else None,
        }
        if self._send(cmd="finish", **payload) and self._expect("finished"):
            self.proc.wait(timeout=self.timeout_s)
            return CaseResult.model_validate_json(self.result_path.read_text())
        return CaseResult(error=self.error)

    def wait_result(self) -> CaseResult:
        """For jobs that end by themselves (tokenize): wait for `finished` and read the result."""
        if self._expect("finished"):
            self.proc.wait(timeout=self.timeout_s)
            return CaseResult.model_validate_json(self.result_path.read_text())
        return CaseResult(error=self.error)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


__all__ = ["CaseProcess"]
