"""`bench`: compare quantization levels, execution providers and engines on speed, memory and quality."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edge_agent.cli_support import FriendlyErrors

app = typer.Typer(
    cls=FriendlyErrors,
    help=(
        "bench: measure and compare model variants, execution providers and engines.\n\n"
        "Each case runs in its own process with warm-up and repetitions; results are tables, JSON,\n"
        "CSV, Markdown and PNG plots, and are appended to a results file for later comparison."
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"
    md = "md"


@app.callback()
def main() -> None:
    """Group callback: keeps subcommands explicit even when there is one."""


@app.command("version")
def version() -> None:
    """Print the bench version."""
    from edge_agent import __version__

    print(__version__)


def wide_console() -> Console:
    """Stdout console; pipes and files get every column instead of an 80-character squeeze."""
    return Console(width=None if Console().is_terminal else 200)


SUFFIX_FORMATS = {".json": "json", ".csv": "csv", ".md": "md"}


def emit(records: list, fmt: Format, outputs: list[Path], title: str, baseline: str | None = None) -> None:
    """Print records in the chosen format; write each --output in the format its suffix names."""
    from bench import report

    if fmt is Format.table:
        wide_console().print(report.table(records, title=title, baseline=baseline))
    else:
        text = report.render(records, fmt.value, baseline)
        print(text, end="" if text.endswith("\n") else "\n")
    for path in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        name = SUFFIX_FORMATS.get(path.suffix.lower(), "md" if fmt is Format.table else fmt.value)
        path.write_text(report.render(records, name, baseline))


@app.command("compare")
def compare(
    bundle: list[str] = typer.Option(
        [], "--bundle", "-b", help="Bundle folder, bundle URL, or NAME@VERSION with --registry (repeatable)."
    ),
    registry: str | None = typer.Option(
        None, "--registry", help="Registry base URL for NAME@VERSION bundles."
    ),
    variant: list[str] = typer.Option(
        [], "--variant", "-v", help="Only these variant ids of the bundles (repeatable; default all)."
    ),
    keys: list[Path] = typer.Option(
        [], "--keys", "-k", help="Trusted public keys: check bundle signatures first (repeatable)."
    ),
    onnx: list[Path] = typer.Option(
        [], "--onnx", help="An ONNX variant folder (genai_config.json inside) (repeatable)."
    ),
    pytorch: list[Path] = typer.Option(
        [], "--pytorch", help="A Hugging Face folder, run in PyTorch eager fp32 (repeatable)."
    ),
    gguf: list[Path] = typer.Option(
        [], "--gguf", help="A GGUF file, run on llama.cpp (needs the llamacpp extra) (repeatable)."
    ),
    provider: list[str] = typer.Option(
        ["CPUExecutionProvider"],
        "--provider",
        "-p",
        help="ONNX Runtime execution providers for ONNX cases (repeatable).",
    ),
    threads: list[int] = typer.Option(
        [], "--threads", "-t", help="Thread counts (repeatable; default: all cores)."
    ),
    scenario: list[str] = typer.Option(
        ["pp128-tg128"],
        "--scenario",
        "-s",
        help="ppN-tgM (prefill N, generate M, like llama-bench), ppN, tgM or chat (repeatable).",
    ),
    chat_tokens: int = typer.Option(64, help="Tokens generated per prompt in the chat scenario."),
    warmup: int = typer.Option(1, help="Warm-up runs per scenario, not measured."),
    reps: int = typer.Option(3, "--reps", "-n", help="Measured repetitions per scenario."),
    interleave: bool = typer.Option(
        True,
        "--interleave/--sequential",
        help="Run repetition k of every case before repetition k+1 of any (fair on a shared machine), "
        "or each case to the end before the next.",
    ),
    reference: str | None = typer.Option(
        None, help="Case label to measure quality against (default: the first case)."
    ),
    baseline: str | None = typer.Option(
        None,
        help="Case label the 'x base' column divides decode speed by, repetition by repetition "
        "(default: the reference).",
    ),
    quality: bool = typer.Option(
        True, "--quality/--no-quality", help="Perplexity, KL and top-1 against the reference."
    ),
    quality_text: Path | None = typer.Option(None, help="Text for quality (default: bench/data/prose.txt)."),
    quality_tokens: int | None = typer.Option(None, help="Score at most this many tokens of the text."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="Output format."),
    as_json: bool = typer.Option(False, "--json", help="Same as --format json."),
    output: list[Path] = typer.Option(
        [], "--output", "-o", help="Also write to this file, format by suffix: .json, .csv, .md (repeatable)."
    ),
    plots: Path | None = typer.Option(
        None, "--plots", help="Write speed_vs_quality.png and speed_vs_size.png here."
    ),
    results: Path | None = typer.Option(
        None, help="Results file to append to (default: $SLMOPS_HOME/bench/results.jsonl)."
    ),
    save: bool = typer.Option(True, "--save/--no-save", help="Append the records to the results file."),
) -> None:
    """Compare bundle variants, ONNX folders, providers, thread counts and peer engines.

    Every case runs in its own process (so peak RSS is its own) on the same token ids: warm-up, then
    repetitions, with a fixed number of generated tokens; by default the repetitions of all cases
    are interleaved, so a neighbour's load on a shared machine falls on every case alike. Figures
    are medians; JSON keeps p90, stddev and the raw samples. The decode bound is measured memory
    read bandwidth / weight bytes read per token. Exit status 1 when any case failed (its row says
    why).

    Example: bench compare --onnx cpu-int4 --onnx cpu-fp32 --gguf model.Q4_1.gguf -t 2 -s pp128-tg128
    """
    from bench import history
    from bench import plots as plotting
    from bench.compare import CompareOptions, count_steps, label_cases, run_compare
    from bench.inputs import bundle_cases, expand, load_bundle, path_case
    from edge_agent.errors import ContractError
    from edge_agent.signing import TrustedKeys

    fmt = Format.json if as_json else fmt
    trusted = TrustedKeys.from_paths(keys) if keys else None
    cases = []
    for spec in bundle:
        cases += bundle_cases(load_bundle(spec, registry, variant or None, trusted), variant or None)
    cases += [path_case("onnxruntime-genai", p) for p in onnx]
    cases += [path_case("pytorch", p) for p in pytorch]
    cases += [path_case("llama.cpp", p) for p in gguf]
    cases = label_cases(expand(cases, provider, list(threads) or [os.cpu_count() or 1]))
    if baseline is not None and baseline not in (names := [c.label for c in cases]):
        raise ContractError("--baseline", f"{baseline!r} is not one of the cases {names}")
    opts = CompareOptions(
        scenarios=scenario,
        warmup=warmup,
        repetitions=reps,
        interleave=interleave,
        chat_tokens=chat_tokens,
        reference=reference,
        quality=quality,
        quality_text=quality_text,
        quality_tokens=quality_tokens,
    )
    err = Console(stderr=True)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("bench", total=count_steps(cases, opts))

        def step(label: str, what: str) -> None:
            bar.update(task, advance=1, description=f"{label}: {what}")

        records = run_compare(cases, opts, step)
    if save:
        path = results or history.default_results_path()
        history.append_records(path, records)
        err.print(f"appended {len(records)} records to {path}")
    emit(records, fmt, output, "bench compare", baseline)
    if plots:
        for p in plotting.write_plots(records, plots):
            err.print(f"plot: {p}")
    failed = [r for r in records if r.error]
    if failed:
        raise typer.Exit(1)


@app.command("history")
def history_cmd(
    results: Path | None = typer.Option(
        None, help="Results file (default: $SLMOPS_HOME/bench/results.jsonl)."
    ),
    threshold: float = typer.Option(0.10, help="Flag a metric that got worse by more than this fraction."),
    scenario: str | None = typer.Option(None, help="Only this scenario."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (each run with its changes)."),
    fail_on_regression: bool = typer.Option(
        False, help="Exit status 1 when the latest run of any case regressed."
    ),
) -> None:
    """Every recorded run, each compared with the previous run of the same case; regressions flagged.

    Runs are comparable when model, variant, engine, provider, scenario, threads and host match.
    """
    import json

    from rich.table import Table

    from bench import history
    from bench.report import record_label

    path = results or history.default_results_path()
    entries = history.history(history.load_records(path), threshold)
    if scenario:
        entries = [e for e in entries if e.record.scenario == scenario]
    latest = {history.key(e.record): e for e in entries}
    regressed = [e for e in latest.values() if e.regressions]
    if as_json:
        doc = [
            {
                "record": e.record.model_dump(mode="json", by_alias=True),
                "changes": [c.__dict__ for c in e.changes],
                "regressions": [c.metric for c in e.regressions],
            }
            for e in entries
        ]
        print(json.dumps(doc, indent=2))
    else:
        t = Table(title=f"bench history ({path})")
        for col in (
            "time",
            "case",
            "scenario",
            "threads",
            "decode tok/s",
            "Δ decode",
            "TTFT ms",
            "peak RSS MB",
            "ppl",
            "flags",
        ):
            t.add_column(col, justify="left" if col in ("time", "case", "scenario", "flags") else "right")
        for e in entries:
            r = e.record
            decode = r.metrics.get("decode_tok_s")
            ttft = r.metrics.get("ttft_ms")
            delta = next((c.change for c in e.changes if c.metric == "decode_tok_s"), None)
            flags = ", ".join(f"{c.metric} {c.change:+.0%}" for c in e.regressions)
            t.add_row(
                r.time.strftime("%Y-%m-%d %H:%M:%S"),
                record_label(r),
                r.scenario,
                str(r.meta.threads or "-"),
                f"{decode.median:.1f}" if decode else "-",
                f"{delta:+.1%}" if delta is not None else "",
                f"{ttft.median:.1f}" if ttft else "-",
                f"{r.peak_rss_mb:.0f}" if r.peak_rss_mb else "-",
                f"{r.quality.perplexity:.2f}" if r.quality else "-",
                f"[red]REGRESSION: {flags}[/red]" if flags else "",
            )
        wide_console().print(t)
        if regressed:
            Console(stderr=True).print(f"[red]{len(regressed)} case(s) regressed in their latest run[/red]")
    if fail_on_regression and regressed:
        raise typer.Exit(1)


class LoadScenario(StrEnum):
    single_stream = "single-stream"
    server = "server"
    offline = "offline"


@app.command("serve")
def serve_cmd(
    url: str = typer.Argument(..., help="Base URL of the agent's API, e.g. http://127.0.0.1:8088"),
    model: str = typer.Option(..., "--model", "-m", help="Model id as the API knows it (see /v1/models)."),
    scenario: list[LoadScenario] = typer.Option(
        [LoadScenario.single_stream, LoadScenario.server, LoadScenario.offline],
        "--scenario",
        "-s",
        help="single-stream, server and/or offline (repeatable; default all three).",
    ),
    count: int = typer.Option(16, "--count", "-n", help="Requests per scenario, at most."),
    max_seconds: float = typer.Option(60.0, help="No new request starts after this many seconds."),
    rate: float = typer.Option(1.0, help="Server scenario: mean Poisson arrival rate, requests/s."),
    max_tokens: int = typer.Option(
        32, help="Tokens each request generates (fixed: min_tokens = max_tokens)."
    ),
    timeout: float = typer.Option(120.0, help="Per-request timeout, seconds."),
    api_key: str | None = typer.Option(
        None, envvar="SLMOPS_API_KEY", help="Bearer key, when the API needs one."
    ),
    seed: int = typer.Option(0, help="Seed of the Poisson arrivals."),
    as_json: bool = typer.Option(False, "--json", help="Print the records as JSON."),
    results: Path | None = typer.Option(
        None, help="Results file to append to (default: $SLMOPS_HOME/bench/results.jsonl)."
    ),
    save: bool = typer.Option(True, "--save/--no-save", help="Append the records to the results file."),
) -> None:
    """Load a running agent's OpenAI-compatible API the MLPerf way; bounded in count and time.

    single-stream: one request at a time (latency p50/p90). server: Poisson arrivals at --rate
    (TTFT and TPOT p99). offline: all --count requests at once (throughput). Every request streams,
    uses the chat prompt set and generates exactly --max-tokens tokens. Exit status 1 when any
    request failed.
    """
    import json

    from rich.table import Table

    from bench import history
    from bench.compare import chat_prompts
    from bench.load import LoadOptions, run_load
    from edge_agent.bench_metrics import percentile

    opts = LoadOptions(
        url=url, model=model, max_tokens=max_tokens, count=count, max_seconds=max_seconds,
        rate=rate, timeout_s=timeout, api_key=api_key, seed=seed,
    )  # fmt: skip
    prompts = [messages[0]["content"] for messages in chat_prompts()]
    err = Console(stderr=True)
    records = []
    for name in scenario:
        with err.status(f"{name.value}: up to {count} requests, {max_seconds:g} s"):
            records.append(run_load(name.value, opts, prompts))
    if save:
        path = results or history.default_results_path()
        history.append_records(path, records)
        err.print(f"appended {len(records)} records to {path}")
    if as_json:
        print(json.dumps([r.model_dump(mode="json", by_alias=True) for r in records], indent=2))
    else:

        def pcts(r, key: str, qs: tuple[int, ...]) -> str:  # type: ignore[no-untyped-def]
            s = r.metrics.get(key)
            return " / ".join(f"{percentile(s.samples, q):.0f}" for q in qs) if s and s.samples else "-"

        t = Table(title=f"bench serve {url} ({model})")
        for col in (
            "scenario",
            "ok",
            "failed",
            "latency ms p50/p90/p99",
            "TTFT ms p50/p90/p99",
            "TPOT ms p50/p99",
            "tok/s",
            "req/s",
        ):
            t.add_column(col, justify="left" if col == "scenario" else "right")
        for r in records:
            failed = int(r.metrics["failed_requests"].median)
            tput, qps = r.metrics.get("throughput_tok_s"), r.metrics.get("completed_qps")
            t.add_row(
                r.scenario,
                str(r.meta.repetitions - failed),
                str(failed),
                pcts(r, "latency_ms", (50, 90, 99)),
                pcts(r, "ttft_ms", (50, 90, 99)),
                pcts(r, "tpot_ms", (50, 99)),
                f"{tput.median:.1f}" if tput else "-",
                f"{qps.median:.2f}" if qps else "-",
            )
        wide_console().print(t)
    if any(r.error or r.metrics["failed_requests"].median for r in records):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()


@app.command("fleet")
def fleet_cmd(
    broker: str = typer.Option(
        "mqtt://127.0.0.1:1883",
        "--broker",
        help="MQTT broker URL; ?protocol=3.1.1 for RabbitMQ or NATS, &roll-call=on for RabbitMQ.",
    ),
    devices: int = typer.Option(1000, "--devices", min=1, help="Simulated devices (one connection each)."),
    groups: int = typer.Option(
        1, "--groups", min=1, help="Groups the devices are spread over; g0 is rolled out."
    ),
    fail_rate: list[str] = typer.Option(
        ["crash=0.01"],
        "--fail-rate",
        help="STEP=P for the converging run: download, health or crash (repeatable).",
    ),
    abort_fail_rate: list[str] = typer.Option(
        ["health=0.2"], "--abort-fail-rate", help="STEP=P for the aborting run (repeatable)."
    ),
    seed: int = typer.Option(0, "--seed", help="Failure draws are seeded per device and deployment."),
    canary: float = typer.Option(0.01, "--canary", help="The rollout's first wave (share or count)."),
    growth: float = typer.Option(
        5.0, "--growth", help="Each later wave is this many times the previous one."
    ),
    max_failed: float = typer.Option(
        0.05, "--max-failed", help="The rollout's abort threshold (failed share)."
    ),
    step_delay: float = typer.Option(0.05, "--step-delay", help="Seconds between a device's install steps."),
    status_at: list[int] = typer.Option(
        [10_000], "--status-at", help="Also time fleet status at this many devices."
    ),
    garbage: int = typer.Option(2, "--garbage", help="Devices that also publish unreadable messages."),
    results: Path | None = typer.Option(
        None, help="Results file (default: $SLMOPS_HOME/bench/results.jsonl)."
    ),
    save: bool = typer.Option(True, "--save/--no-save", help="Append the records to the results file."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """A staged rollout over simulated devices on a real broker: one converging run, one aborting run.

    The devices check signature, revision and expiry with the agent's own code, fetch and hash the
    manifest from a real registry server, and walk the real event sequence; `slmops rollout` is the
    real operator in its own process. Prints time to converge, per-wave time, events/s, broker
    messages, the operator's peak RSS and CPU seconds, and `slmops fleet status` times.
    """
    import json
    import sys

    from rich.console import Console

    from bench import history
    from bench.fleet import FailureRates, FleetBenchOptions, fleet_records, fleet_table, run_fleet_bench

    err = Console(stderr=True)
    try:
        rates, abort_rates = FailureRates.parse(fail_rate), FailureRates.parse(abort_fail_rate)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    opts = FleetBenchOptions(
        broker=broker,
        devices=devices,
        groups=groups,
        seed=seed,
        failures=rates,
        abort_failures=abort_rates,
        canary=canary,
        growth=growth,
        max_failed=max_failed,
        step_delay_s=step_delay,
        garbage_devices=garbage,
        status_at=status_at,
    )
    result = run_fleet_bench(opts, say=lambda m: err.print(m, markup=False, highlight=False))
    if save:
        path = results or history.default_results_path()
        history.append_records(path, fleet_records(result))
        err.print(f"appended records to {path}")
    if as_json:
        json.dump(result.to_json(), sys.stdout, indent=2)
        print()
    else:
        wide_console().print(fleet_table(result))
    if not result.ok:
        raise typer.Exit(1)
