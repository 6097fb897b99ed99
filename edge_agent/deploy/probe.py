"""The health gate where nothing is served: load the candidate and ask it the probe prompt, in a child.

`ProbeActivator` implements the `Activator` seam (edge_agent.activation) for an agent that does not
host the API. Each probe runs `python -m edge_agent.deploy.probe` in its own process, so a model that
hangs is killed at `health_timeout_s`, one that crashes the runtime cannot take the agent down, and
the agent's own memory stays free of models.

Exit codes of the child: 0 answered (JSON on stdout), 3 could not load, 4 loaded but did not answer.
With `--bench` the child also runs the short device bench (edge_agent.device_bench) and prints its
record: how a probe-only agent benches a new version without holding the model itself.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from edge_agent import adapters as adapter_files
from edge_agent.activation import Candidate
from edge_agent.contracts import BundleManifest
from edge_agent.errors import HealthCheckError, ModelRuntimeError, ProviderUnavailableError
from edge_agent.serving.settings import RuntimeSettings

EXIT_LOAD, EXIT_ANSWER = 3, 4
CPU = "CPUExecutionProvider"


class ProbeActivator:
    """Probes each candidate in a child process; promotes nothing, since nothing is served."""

    serves = False

    def __init__(self, runtime: RuntimeSettings | None = None) -> None:
        self.runtime = runtime or RuntimeSettings()
        self.active: Candidate | None = None

    def load_candidate(
        self,
        install_dir: Path,
        manifest: BundleManifest,
        variant_id: str,
        providers: list[str],
        timeout_s: float,
    ) -> Candidate:
        fallbacks: list[str] = []
        deadline = time.monotonic() + timeout_s
        # an adapter for another base is refused here, before any child loads anything
        with_adapters = bool(adapter_files.from_manifest(manifest, variant_id, Path(install_dir)))
        for i, provider in enumerate(providers):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            code, detail = self._probe(Path(install_dir) / variant_id, provider, left, with_adapters)
            if code == 0:
                return Candidate(Path(install_dir), manifest, variant_id, provider, fallbacks, detail)
            # A provider other than the CPU failing to load may be the provider, not the model: try the next.
            if code == EXIT_LOAD and provider != CPU and i + 1 < len(providers):
                fallbacks.append(f"{provider}: {detail}")
                continue
            if code == EXIT_LOAD and provider != CPU:
                raise ProviderUnavailableError(f"no execution provider could load {variant_id}: {detail}")
            raise HealthCheckError(f"{manifest.ref} {variant_id} on {provider}: {detail}")
        raise HealthCheckError(f"{manifest.ref} {variant_id}: no answer within {timeout_s:g} s")

    def _probe(
        self, variant_dir: Path, provider: str, timeout_s: float, with_adapters: bool
    ) -> tuple[int, dict | str]:
        cmd = [sys.executable, "-m", "edge_agent.deploy.probe", str(variant_dir), "--provider", provider]
        cmd += ["--prompt", self.runtime.probe_prompt, "--max-tokens", str(self.runtime.probe_max_tokens)]
        cmd += ["--adapters"] if with_adapters else []
        cmd += ["--session-options", json.dumps(self.runtime.session_options)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return EXIT_ANSWER, f"no answer within {timeout_s:.0f} s"
        if proc.returncode == 0:
            return 0, json.loads(proc.stdout)
        lines = (proc.stderr.strip() or f"probe exited with status {proc.returncode}").splitlines()
        return proc.returncode, lines[-1][:500]

    def bench(self, candidate: Candidate, timeout_s: float, device: str) -> dict:
        """The post-install bench of a probed candidate, in a child like the probe; a BenchRecord dict."""
        variant = candidate.manifest.variant(candidate.variant_id)
        cmd = [
            sys.executable,
            "-m",
            "edge_agent.deploy.probe",
            str(candidate.install_dir / candidate.variant_id),
        ]
        cmd += ["--provider", candidate.provider, "--bench", "--model-ref", candidate.manifest.ref]
        cmd += ["--device", device, "--precision", variant.precision, "--budget-s", f"{timeout_s:.1f}"]
        cmd += ["--session-options", json.dumps(self.runtime.session_options)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s + 30)
        except subprocess.TimeoutExpired as exc:
            raise HealthCheckError(f"{candidate.manifest.ref}: the bench did not finish in time") from exc
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or [f"status {proc.returncode}"])[-1]
            raise HealthCheckError(f"{candidate.manifest.ref}: the bench failed: {tail[:500]}")
        return json.loads(proc.stdout)["bench"]

    def promote(self, candidate: Candidate) -> None:
        self.active = candidate

    def discard(self, candidate: Candidate) -> None:
        """Nothing stays loaded after a probe: the child process is gone."""


def probe(
    variant_dir: Path,
    provider: str,
    prompt: str,
    max_tokens: int,
    with_adapters: bool = False,
    session_options: dict | None = None,
) -> dict:
    """Load and answer one prompt, then (with_adapters) load each of the manifest's adapters for this
    variant and ask it one request of its task; what the child process runs."""
    from edge_agent import probing
    from edge_agent.runtime import LoadedModel

    t0 = time.perf_counter()
    model = LoadedModel(variant_dir, provider, session_options=session_options)
    load_s = time.perf_counter() - t0
    answer = probing.ask(model, prompt, max_tokens)
    result = {
        "provider": provider,
        "load_s": round(load_s, 3),
        "answer_s": round(answer.seconds, 3),
        "tokens": answer.tokens,
        "text": answer.text,
    }
    if with_adapters:
        install_dir = variant_dir.parent
        manifest = BundleManifest.model_validate_json((install_dir / "manifest.json").read_bytes())
        result["adapters"] = {}
        for adapter in adapter_files.from_manifest(manifest, variant_dir.name, install_dir):
            model.load_adapter(adapter.name, adapter.path)
            got = probing.ask(model, prompt, max_tokens, adapter=adapter.info)
            result["adapters"][adapter.name] = {"tokens": got.tokens, "text": got.text}
    return result


def _bench(args: argparse.Namespace) -> dict:
    from edge_agent.device_bench import run_device_bench
    from edge_agent.runtime import LoadedModel

    t0 = time.perf_counter()
    model = LoadedModel(args.variant_dir, args.provider, session_options=json.loads(args.session_options))
    record = run_device_bench(
        model,
        model_ref=args.model_ref or args.variant_dir.name,
        variant=args.variant_dir.name,
        device=args.device,
        precision=args.precision,
        budget_s=args.budget_s,
        load_time_s=time.perf_counter() - t0,
    )
    return record.model_dump(mode="json", by_alias=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Load one variant and answer the probe prompt.")
    parser.add_argument("variant_dir", type=Path)
    parser.add_argument("--provider", default=CPU)
    parser.add_argument("--prompt", default=RuntimeSettings().probe_prompt)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--adapters", action="store_true", help="also probe the manifest's adapters")
    parser.add_argument("--bench", action="store_true", help="then run the short device bench")
    parser.add_argument("--model-ref", default="")
    parser.add_argument("--device", default=None)
    parser.add_argument("--precision", default=None)
    parser.add_argument("--budget-s", type=float, default=60.0)
    parser.add_argument("--session-options", default="{}", help="runtime.session_options, as JSON")
    args = parser.parse_args(argv)
    try:
        from edge_agent.runtime import LoadedModel  # noqa: F401  (import errors count as load errors)

        options = json.loads(args.session_options)
        result = probe(args.variant_dir, args.provider, args.prompt, args.max_tokens, args.adapters, options)
        if args.bench:
            result = {"probe": result, "bench": _bench(args)}
    except ModelRuntimeError as exc:
        print(f"could not load: {exc}", file=sys.stderr)
        return EXIT_LOAD
    except Exception as exc:  # the child's whole job is to turn any failure into an exit status
        print(f"did not answer: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ANSWER
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
