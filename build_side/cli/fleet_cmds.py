"""`slmops deploy`, `slmops rollout` and `slmops fleet status|events|bench|rollouts|deployments`.

Thin over build_side.fleet: options become a request, the library does the work, this module prints.
"""

from __future__ import annotations

import json
from contextlib import ExitStack, suppress
from datetime import timedelta
from pathlib import Path

import typer
from pydantic import ValidationError

from build_side.cli.fleet_dashboard_cmd import dashboard_cmd
from build_side.cli.fleet_render import bench_table, event_line, rollout_table, status_table
from build_side.cli.output import console, err_console, print_json, table
from build_side.fleet import settings
from build_side.fleet.broker import BrokerSession
from build_side.fleet.deploy import DeployRequest, deploy
from build_side.fleet.errors import FleetError
from build_side.fleet.history import History
from build_side.fleet.rollout import RolloutRunner, load_report
from build_side.fleet.rollout_plan import check_percents
from build_side.fleet.rollout_store import RolloutParams, RolloutStore
from build_side.fleet.status import bench_summary, collect_snapshot
from build_side.fleet.watch import FleetWatch
from edge_agent.contracts import DeploymentPolicy, VariantPolicy

fleet_app = typer.Typer(help="See the fleet: status, events, bench records, rollouts.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy_cmd)
    app.command("rollout")(rollout_cmd)
    app.add_typer(fleet_app, name="fleet")
    fleet_app.command("dashboard")(dashboard_cmd)


# Options shared by the commands -------------------------------------------------------------------

BROKER = typer.Option(
    None, "--broker", help="MQTT broker URL (default $SLMOPS_BROKER or mqtt://127.0.0.1:1883)."
)
FLEET = typer.Option(None, "--fleet", help="Fleet id (default $SLMOPS_FLEET or `default`).")
REGISTRY = typer.Option(
    None, "--registry", help="Registry directory or URL (default $SLMOPS_REGISTRY or $SLMOPS_HOME/registry)."
)
DB = typer.Option(
    None,
    "--db",
    help=(
        "History database: a SQLite file, or postgresql://user:password@host:port/database to share "
        "one history between operator machines (default $SLMOPS_DB or $SLMOPS_HOME/fleet.db)."
    ),
)
KEY = typer.Option(None, "--key", help="Private key that signs the desired state (default: the only one).")
JSON = typer.Option(False, "--json", help="Print the result as JSON.")
VARIANT_POLICY = typer.Option(
    None,
    "--variant-policy",
    help=(
        "Which variant devices should pick: JSON, or `key=value;...` with keys variant, precisions, "
        "devices, providers, e.g. 'precisions=int4,int8;devices=cpu'."
    ),
)
BENCH = typer.Option(
    False, "--bench", help="Ask devices for a short bench after install (sent back on .../bench)."
)
HEALTH_TIMEOUT = typer.Option(
    120.0, "--health-timeout", help="Seconds a new version has to load and answer its probe."
)
MAX_ATTEMPTS = typer.Option(3, "--max-attempts", help="Download/install attempts before a device gives up.")
NO_ROLLBACK = typer.Option(
    False, "--no-rollback", help="Do not restore the previous version when the health gate fails."
)
EXPIRES = typer.Option(None, "--expires-in", help="Seconds after which devices ignore this desired state.")


def parse_variant_policy(text: str | None) -> VariantPolicy:
    """JSON, or the short form `variant=cpu-int4;precisions=int4,int8;devices=cpu;providers=CPUExecutionProvider`."""
    if not text:
        return VariantPolicy()
    if text.lstrip().startswith("{"):
        return VariantPolicy.model_validate_json(text)
    names = {
        "variant": "variant",
        "precisions": "allowed_precisions",
        "devices": "preferred_devices",
        "providers": "preferred_providers",
    }
    doc: dict[str, object] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in names:
            raise FleetError(f"--variant-policy: {part!r} is not one of {', '.join(names)}=...")
        field = names[key.strip()]
        doc[field] = (
            value.strip() if field == "variant" else [v.strip() for v in value.split(",") if v.strip()]
        )
    return VariantPolicy.model_validate(doc)


def _policy(health_timeout: float, max_attempts: int, no_rollback: bool, bench: bool) -> DeploymentPolicy:
    return DeploymentPolicy(
        health_timeout_s=health_timeout,
        max_attempts=max_attempts,
        rollback_on_failure=not no_rollback,
        bench_after_install=bench,
    )


def _key(path: Path | None):  # type: ignore[no-untyped-def]
    from build_side.cli.keys_cmds import default_signing_key

    return default_signing_key(path)


# deploy -------------------------------------------------------------------------------------------


def deploy_cmd(
    bundle: str = typer.Argument(..., help="NAME@VERSION of a bundle the registry holds."),
    device: list[str] = typer.Option([], "--device", "-d", help="Device id (repeatable)."),
    group: list[str] = typer.Option([], "--group", "-g", help="Device group (repeatable)."),
    channel: list[str] = typer.Option(
        [], "--channel", help="HTTP channel for polling devices: writes channels/<channel>.json (repeatable)."
    ),
    registry: str | None = REGISTRY,
    broker: str | None = BROKER,
    fleet: str | None = FLEET,
    key: Path | None = KEY,
    variant_policy: str | None = VARIANT_POLICY,
    bench: bool = BENCH,
    health_timeout: float = HEALTH_TIMEOUT,
    max_attempts: int = MAX_ATTEMPTS,
    no_rollback: bool = NO_ROLLBACK,
    expires_in: float | None = EXPIRES,
    wait: bool = typer.Option(False, "--wait", help="Follow the devices' events until each one finishes."),
    wait_timeout: float = typer.Option(600.0, "--wait-timeout", help="Seconds --wait waits at most."),
    db: str | None = DB,
    json_out: bool = JSON,
) -> None:
    """Point devices, groups or HTTP channels at a bundle: a signed desired state with the next revision.

    The bundle must be in the registry (its manifest is read and hashed; the desired state carries that
    sha256). Over MQTT the state is published retained at QoS 1 and acknowledged by the broker; for
    devices that poll over HTTP it is written atomically to channels/<channel>.json in the registry.
    """
    fleet = fleet or settings.fleet_id()
    req = DeployRequest(
        bundle=bundle,
        registry=registry or settings.registry_location(),
        devices=device,
        groups=group,
        channels=channel,
        variant_policy=parse_variant_policy(variant_policy),
        policy=_policy(health_timeout, max_attempts, no_rollback, bench),
        expires_in=timedelta(seconds=expires_in) if expires_in else None,
    )
    signing_key = _key(key)
    with ExitStack() as stack:
        history = stack.enter_context(History(db or settings.history_location()))
        watch = None
        if device or group:
            session = stack.enter_context(BrokerSession(broker or settings.broker_url(), fleet))
            hook = None if json_out else (lambda e: console.print(event_line(e)))
            watch = FleetWatch(session, history, on_event=hook)
            for d in device:
                if d not in watch.snapshot.devices:
                    err_console.print(
                        f"[yellow]note:[/] device {d} has not reported yet; it gets this when it connects"
                    )
        published = deploy(
            req,
            fleet=fleet,
            key=signing_key,
            history=history,
            session=watch.session if watch else None,
            snapshot=watch.snapshot if watch else None,
        )
        if not json_out:
            console.print(
                table(
                    f"deployed {published[0].state.bundle.ref}",
                    ["target", "revision", "deployment", "where"],
                    [
                        [f"{p.target_kind} {p.target}", p.state.revision, p.state.deployment_id, p.where]
                        for p in published
                    ],
                )
            )
        outcomes = {}
        if wait and watch:
            targets: dict[str, str] = {}
            for p in published:
                if p.target_kind == "device":
                    targets[p.target] = p.state.deployment_id
                elif p.target_kind == "group":
                    targets |= {d: p.state.deployment_id for d in watch.snapshot.members(p.target)}
            if not json_out:
                console.print(f"waiting for {len(targets)} device(s) (up to {wait_timeout:.0f} s) ...")
            outcomes = watch.wait_for_outcomes(targets, wait_timeout)
    if json_out:
        print_json(
            {
                "published": [p.to_json() for p in published],
                "outcomes": {
                    d: {"state": o.state, "detail": o.detail, "deployment_id": o.deployment_id}
                    for d, o in outcomes.items()
                },
            }
        )
    else:
        for d, o in outcomes.items():
            console.print(f"{d}: {o.state or 'TIMEOUT'} {o.detail}")
    if outcomes and not all(o.succeeded for o in outcomes.values()):
        raise typer.Exit(2)


# rollout ------------------------------------------------------------------------------------------


def rollout_cmd(
    bundle: str = typer.Argument(..., help="NAME@VERSION of a bundle the registry holds."),
    group: str = typer.Option(..., "--group", "-g", help="The device group to roll out over."),
    waves: str | None = typer.Option(
        None,
        "--waves",
        help="Waves as cumulative percentages of the group, e.g. 1,10,50,100 (instead of --canary/--growth).",
    ),
    canary: float | None = typer.Option(
        None, "--canary", help="First wave: a share of the group (<1) or a count (>=1). Default 0.1."
    ),
    growth: float | None = typer.Option(
        None, "--growth", help="Each later wave is this many times the previous one. Default 2."
    ),
    wave_timeout: float = typer.Option(600.0, "--wave-timeout", help="Seconds a wave waits for its devices."),
    max_failed: float = typer.Option(
        0.0, "--max-failed", help="Stop when failed/attempted devices exceeds this share (0: any failure)."
    ),
    include_offline: bool = typer.Option(
        False, "--include-offline", help="Also target devices that are offline."
    ),
    new: bool = typer.Option(
        False, "--new", help="Abandon an unfinished rollout of the same bundle and start over."
    ),
    registry: str | None = REGISTRY,
    broker: str | None = BROKER,
    fleet: str | None = FLEET,
    key: Path | None = KEY,
    variant_policy: str | None = VARIANT_POLICY,
    bench: bool = BENCH,
    health_timeout: float = HEALTH_TIMEOUT,
    max_attempts: int = MAX_ATTEMPTS,
    no_rollback: bool = NO_ROLLBACK,
    db: str | None = DB,
    json_out: bool = JSON,
) -> None:
    """Deploy a bundle over a group in waves: a canary then growing batches, or --waves percentages.

    Each wave waits for SUCCEEDED from its devices. When failed devices pass the --max-failed share,
    the rollout stops, puts that wave's devices back on the version each ran before, and reports;
    devices of later waves are never touched. Stopped (Ctrl-C, crash, kill -9)? Run the same command
    again: it resumes in the step it was in, from the state kept in the history database.
    """
    fleet = fleet or settings.fleet_id()
    try:
        params = RolloutParams(
            canary=0.1 if canary is None else canary,
            growth=2.0 if growth is None else growth,
            waves=parse_waves(waves, canary, growth),
            wave_timeout_s=wave_timeout,
            max_failed=max_failed,
            include_offline=include_offline,
            variant_policy=parse_variant_policy(variant_policy),
            policy=_policy(health_timeout, max_attempts, no_rollback, bench),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise FleetError(f"rollout: {where}: {first['msg']}") from None
    signing_key = _key(key)
    say = (lambda _m: None) if json_out else console.print
    with (
        History(db or settings.history_location()) as history,
        BrokerSession(broker or settings.broker_url(), fleet) as session,
    ):
        watch = FleetWatch(session, history, on_event=None if json_out else lambda e: say(event_line(e)))
        runner = RolloutRunner(
            watch=watch,
            history=history,
            registry=registry or settings.registry_location(),
            key=signing_key,
            progress=say,
            on_step=None
            if json_out
            else lambda step, wave: say(f"[dim]rollout step {step} (wave {wave})[/]"),
        )
        if new:
            from build_side.fleet.catalog import resolve_bundle

            old = RolloutStore(history).unfinished(fleet, group, resolve_bundle(runner.registry, bundle))
            if old:
                runner.abandon(old, "abandoned by --new")
                say(f"abandoned unfinished rollout {old.id}")
        report = runner.run(runner.start(group, bundle, params))
        if line := watch.unreadable_line():
            err_console.print(line, markup=False, highlight=False)
    if json_out:
        print_json(report.to_json())
    else:
        console.print(rollout_table(report))
        console.print(report.rollout.note)
    if not report.ok:
        raise typer.Exit(2)


def parse_waves(text: str | None, canary: float | None, growth: float | None) -> list[float] | None:
    """`1,10,50,100` -> [1.0, 10.0, 50.0, 100.0]; refuses mixing with --canary/--growth."""
    if text is None:
        return None
    if canary is not None or growth is not None:
        raise FleetError("--waves replaces --canary and --growth: give one or the other")
    try:
        percents = [float(p.strip().rstrip("%")) for p in text.split(",") if p.strip()]
        return check_percents(percents)
    except ValueError as exc:
        raise FleetError(f"--waves {text!r}: {exc}") from None


# fleet status | events | bench | rollouts | deployments -------------------------------------------


@fleet_app.command("credentials")
def credentials_cmd(
    device: list[str] = typer.Option(
        ...,
        "--device",
        "-d",
        help="A device id, with its groups after a colon: kiosk-7:shops,eu (repeatable).",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Folder for passwd, acl, mosquitto.conf, credentials.json."
    ),
    fleet: str | None = FLEET,
    operator: str = typer.Option("operator", "--operator", help="The operator's user name."),
    port: int = typer.Option(1883, "--port", help="Listener port written into mosquitto.conf."),
    json_out: bool = JSON,
) -> None:
    """Write a Mosquitto password file and ACL for the fleet: each device may read only its own (and its
    groups') desired state and write only its own reports; only the operator may publish desired states.
    The passwords are in credentials.json (mode 0600): put each in that device's agent.yaml
    (mqtt.username, mqtt.password) and the operator's in $SLMOPS_BROKER (mqtt://operator:PASSWORD@host)."""
    from build_side.fleet.credentials import make_credentials, write_credentials

    creds = make_credentials(fleet or settings.fleet_id(), device, operator)
    paths = write_credentials(creds, out, port)
    if json_out:
        print_json({"fleet": creds.fleet, "files": [str(p) for p in paths]})
        return
    for path in paths:
        console.print(f"wrote {path}", highlight=False)
    console.print(f"start the broker with: mosquitto -c {out.resolve() / 'mosquitto.conf'}", highlight=False)


@fleet_app.command("status")
def status_cmd(
    broker: str | None = BROKER,
    fleet: str | None = FLEET,
    group: str | None = typer.Option(None, "--group", "-g", help="Only devices of this group."),
    db: str | None = DB,
    json_out: bool = JSON,
) -> None:
    """Every device of the fleet: online, groups, active bundle, variant, provider, last event and bench.

    Online state, reported state and desired states come from the broker's retained messages; the last
    event and bench record come from what this operator saw (events and bench are not retained).
    """
    fleet = fleet or settings.fleet_id()
    with (
        History(db or settings.history_location()) as history,
        BrokerSession(broker or settings.broker_url(), fleet) as session,
    ):
        snap = collect_snapshot(session, history)
    if group:
        snap.devices = {d: v for d, v in snap.devices.items() if group in v.groups}
    if json_out:
        print_json({"fleet": fleet, "devices": [snap.devices[d].to_json() for d in sorted(snap.devices)]})
    else:
        console.print(status_table(snap))


@fleet_app.command("events")
def events_cmd(
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep following live events (Ctrl-C stops)."),
    device: list[str] = typer.Option([], "--device", "-d", help="Only these devices."),
    duration: float | None = typer.Option(
        None, "--duration", help="With --follow: stop after this many seconds."
    ),
    limit: int = typer.Option(50, "--limit", help="How many recorded events to show first."),
    broker: str | None = BROKER,
    fleet: str | None = FLEET,
    db: str | None = DB,
    json_out: bool = typer.Option(False, "--json", help="One JSON event per line."),
) -> None:
    """Deployment events: those recorded so far, then (--follow) live ones, deduplicated and recorded."""
    fleet = fleet or settings.fleet_id()

    def show(event) -> None:  # type: ignore[no-untyped-def]
        if json_out:
            print(event.model_dump_json(by_alias=True), flush=True)
        else:
            console.print(event_line(event))

    with History(db or settings.history_location()) as history:
        recorded = [e for e in history.events(fleet, limit=limit * 10) if not device or e.device in device][
            -limit:
        ]
        for e in recorded:
            show(e)
        if not follow:
            return
        with BrokerSession(broker or settings.broker_url(), fleet) as session:
            watch = FleetWatch(session, history, on_event=show)
            if not json_out:
                console.print(f"[dim]following events of fleet {fleet} (Ctrl-C stops)[/]")
            with suppress(KeyboardInterrupt):
                watch.follow(device or None, duration)


@fleet_app.command("bench")
def bench_cmd(
    device: list[str] = typer.Option([], "--device", "-d", help="Only these devices."),
    listen: float = typer.Option(
        0.0, "--listen", help="First listen this many seconds for new bench records."
    ),
    latest: bool = typer.Option(True, "--latest/--all", help="Only each device's latest record per variant."),
    broker: str | None = BROKER,
    fleet: str | None = FLEET,
    db: str | None = DB,
    json_out: bool = JSON,
) -> None:
    """The devices' bench records side by side (medians of TTFT, prefill, decode, TPOT, peak RSS)."""
    fleet = fleet or settings.fleet_id()
    with History(db or settings.history_location()) as history:
        if listen > 0:
            with BrokerSession(broker or settings.broker_url(), fleet) as session:
                FleetWatch(session, history).follow(None, listen)
        rows = [(d, r) for d, r in history.bench_records(fleet) if not device or d in device]
    if latest:
        keep = {(d, r.model, r.variant, r.provider, r.scenario): (d, r) for d, r in rows}
        rows = sorted(keep.values(), key=lambda x: (x[0], x[1].model, x[1].variant))
    if json_out:
        print_json(
            [
                {"device": d, **json.loads(r.model_dump_json(by_alias=True)), "summary": bench_summary(r)}
                for d, r in rows
            ]
        )
    else:
        console.print(bench_table(rows))


@fleet_app.command("rollouts")
def rollouts_cmd(
    rollout_id: str | None = typer.Argument(None, help="Show this rollout wave by wave."),
    fleet: str | None = FLEET,
    db: str | None = DB,
    json_out: bool = JSON,
) -> None:
    """Rollouts recorded in the history, or one of them in detail."""
    fleet = fleet or settings.fleet_id()
    with History(db or settings.history_location()) as history:
        store = RolloutStore(history)
        if rollout_id:
            report = load_report(store, rollout_id)
            if json_out:
                print_json(report.to_json())
            else:
                console.print(rollout_table(report))
            return
        rows = store.list(fleet)
    if json_out:
        print_json(
            [
                {
                    "id": r.id,
                    "group": r.group,
                    "bundle": r.bundle.ref,
                    "status": r.status,
                    "step": str(r.step),
                    "wave": r.wave,
                    "created": r.created,
                    "note": r.note,
                }
                for r in rows
            ]
        )
    else:
        console.print(
            table(
                f"rollouts of fleet {fleet}",
                ["id", "group", "bundle", "status", "step", "created", "note"],
                [
                    [r.id, r.group, r.bundle.ref, r.status, f"{r.step} (wave {r.wave})", r.created, r.note]
                    for r in rows
                ],
            )
        )


@fleet_app.command("deployments")
def deployments_cmd(
    fleet: str | None = FLEET,
    limit: int = typer.Option(30, "--limit", help="How many, newest first."),
    db: str | None = DB,
    json_out: bool = JSON,
) -> None:
    """The desired states this operator issued, newest first."""
    fleet = fleet or settings.fleet_id()
    with History(db or settings.history_location()) as history:
        rows = history.deployments(fleet, limit)
    if json_out:
        print_json([{k: v for k, v in r.__dict__.items()} for r in rows])
    else:
        console.print(
            table(
                f"deployments of fleet {fleet}",
                ["revision", "deployment", "target", "bundle", "rollout", "published"],
                [
                    [
                        r.revision,
                        r.deployment_id,
                        f"{r.target_kind} {r.target}",
                        r.bundle,
                        r.rollout_id or "",
                        r.published or "no",
                    ]
                    for r in rows
                ],
            )
        )
