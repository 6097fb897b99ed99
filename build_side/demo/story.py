"""The end-to-end demo: source -> signed release -> registry -> device -> deploy -> ask -> bench -> status.

The release is smollm2-ops (SmolLM2-135M-Instruct with two LoRA adapters for a fleet operator's
requests); the device is asked, through the official `openai` client, per adapter, requests it never
trained on (from the hand-written held-out set), and the demo says how many answers were right.

Everything runs on this machine on embedded defaults: the registry under the user's data dir, served
over HTTP on a free port; one edge agent as a local device (its own config, state dir and API port);
Mosquitto when one listens on 127.0.0.1:1883, HTTP polling of channels/demo.json otherwise. Whatever
the demo starts, it stops (an ExitStack owns each piece), also on Ctrl-C or an error.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from build_side.demo.release import ensure_release, recipe_bundle
from build_side.fleet.broker import BrokerSession
from build_side.fleet.deploy import DeployRequest, deploy
from build_side.fleet.errors import FleetError
from build_side.fleet.history import History
from build_side.fleet.local_agent import LocalAgent, LocalDevice, broker_listening
from build_side.fleet.status import DeviceView, FleetSnapshot, bench_line, collect_snapshot
from build_side.fleet.topics import device_topic
from build_side.fleet.watch import FleetWatch
from build_side.settings import keys_dir
from edge_agent.contracts import (
    TERMINAL_STATES,
    BenchRecord,
    DeploymentPolicy,
    DeploymentState,
    Event,
    ReportedState,
    VariantPolicy,
)
from edge_agent.signing import SigningKey

FLEET, DEVICE, GROUP, CHANNEL = "demo", "demo-device", "demo", "demo"
# Operator requests the adapters never trained on, from manifests/eval/ops_heldout.jsonl (chosen as
# three intents and three kinds of target, before any answer was seen; the demo knows what is right).
DEMO_REQUESTS = (
    "revert the stadium group, the new release is bad",
    "please roll receipt-reader 2.3.1 onto nuc-03",
    "fetch the agent logs from beacon-9",
)


@dataclass
class DemoOptions:
    prompt: str | None  # a question for the base model, beside the adapters' task
    home: Path  # the user's data dir (SLMOPS_HOME)
    transport: str = "auto"  # auto, mqtt or http
    broker: str = "mqtt://127.0.0.1:1883"
    variant: str = "cpu-int4"  # pinned by the desired state's variant policy; "auto": the device chooses
    deploy_timeout_s: float = 600.0
    max_tokens: int = 96


@dataclass
class DemoResult:
    seconds: float = 0.0
    transport: str = ""
    answer: str = ""
    right: int = 0
    asked: int = 0
    answers: list[dict[str, str]] = field(default_factory=list)
    bench: BenchRecord | None = None
    outcome: str = ""
    steps: dict[str, float] = field(default_factory=dict)


class Story:
    def __init__(self, opts: DemoOptions, console: Console) -> None:
        self.opts = opts
        self.console = console
        self.result = DemoResult()
        self._step = 0
        self.steps = 9 if opts.prompt else 8
        self.wall_start = time.time()
        self.ref = "{}@{}".format(*recipe_bundle())

    # narration ---------------------------------------------------------------------------------------

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        self._step += 1
        self.console.rule(f"[bold]{self._step}/{self.steps} {title}")
        started = time.monotonic()
        yield
        took = time.monotonic() - started
        self.result.steps[title] = took
        self.console.print(f"[dim]({took:.1f} s)[/]")

    def say(self, text: str) -> None:
        self.console.print(text)

    # the story ---------------------------------------------------------------------------------------

    def run(self) -> DemoResult:
        started = time.monotonic()
        demo_dir = self.opts.home / "demo"
        registry_dir = self.opts.home / "registry"
        with ExitStack() as stack:
            key = self.signing_key(demo_dir / "keys")
            with self.step("model source: SmolLM2-135M-Instruct"):
                self.prepare_source()
            with self.step("release: train the adapters, build, sign and publish"):
                self.ref = self.release(registry_dir, key, demo_dir / "build")
            with self.step("registry: serve it over HTTP"):
                registry_url = self.serve_registry(stack, registry_dir)
            with self.step("device: start an edge agent on this machine"):
                agent, mode = self.start_device(stack, demo_dir, registry_url, key)
            history = stack.enter_context(History(self.opts.home / "fleet.db"))
            watch = None
            if mode == "mqtt":
                session = stack.enter_context(BrokerSession(self.opts.broker, FLEET))
                watch = FleetWatch(session, history, on_event=self.show_event)
                self.wait_online(watch, agent)
            with self.step(f"deploy {self.ref} and watch its events"):
                self.deploy(history, key, registry_dir, watch, agent)
            with self.step("ask each adapter operator requests it never trained on"):
                self.ask_adapters(agent)
            if self.opts.prompt:
                with self.step("ask the base model through the same API"):
                    self.ask(agent)
            with self.step("the device's bench record"):
                self.show_bench(history, watch, agent)
            with self.step("fleet status"):
                self.show_status(history, watch, agent)
            self.console.rule("[bold]stopping what the demo started")
        self.result.seconds = time.monotonic() - started
        self.console.rule(f"[bold green]demo done in {self.result.seconds:.1f} s")
        return self.result

    # steps -------------------------------------------------------------------------------------------

    def signing_key(self, keys: Path) -> SigningKey:
        found = sorted(keys.glob("*.key"))
        if found:
            return SigningKey.load(found[0])
        key = SigningKey.generate()
        key.save(keys)
        self.say(f"created the demo's signing key {key.key_id} in {keys}")
        return key

    def prepare_source(self):  # type: ignore[no-untyped-def]
        from build_side.sources import prepare

        with self.console.status("preparing smollm2-135m-instruct (de-quantizing the packaged GGUF) ..."):
            src = prepare("smollm2-135m-instruct")
        self.say(
            f"{'reused' if src.cached else 'prepared'} {src.ref} (sha256 {src.sha256[:12]}) -> {src.path}"
        )
        return src

    def release(self, registry: Path, key: SigningKey, work: Path) -> str:
        rel = ensure_release(registry, key, work, self.console)
        verb = "built, measured, signed and published" if rel.built else "reused (the registry holds it)"
        self.say(f"{rel.ref}: {verb}\n  {rel.path}")
        for variant in rel.variants:
            self.say(f"  {variant:<9} {rel.evals.get(variant, '')}")
        for name, line in rel.adapters.items():
            self.say(f"  adapter {name}: {line}")
        return rel.ref

    def serve_registry(self, stack: ExitStack, registry: Path) -> str:
        from build_side.registry_server import registry_app
        from edge_agent.http_server import BackgroundServer

        server = stack.enter_context(BackgroundServer(registry_app(registry)))
        stack.callback(self.say, f"stopped the registry server on {server.url}")
        self.say(f"serving {registry} at {server.url}")
        return server.url

    def start_device(
        self, stack: ExitStack, demo_dir: Path, registry_url: str, key: SigningKey
    ) -> tuple[LocalAgent, str]:
        mode = self.opts.transport
        host_port = self.opts.broker.split("://", 1)[-1]
        host, _, port = host_port.partition(":")
        listening = broker_listening(host, int(port or 1883))
        if mode == "auto":
            mode = "mqtt" if listening else "http"
        elif mode == "mqtt" and not listening:
            raise FleetError(f"--transport mqtt, but no MQTT broker listens on {host_port}")
        self.result.transport = mode
        if mode == "mqtt":
            self.say(
                f"[bold]MQTT[/]: a broker listens on {host_port}, so the device takes its desired state "
                "over MQTT (retained, QoS 1) and reports its state, events and bench back on it."
            )
        else:
            why = "as asked (--transport http)" if listening else f"no MQTT broker listens on {host_port}"
            self.say(
                f"[bold]HTTP polling[/]: {why}, so the device polls channels/{CHANNEL}.json from the "
                "registry every 2 s; with no broker to report to, its events and reported state are read "
                "from its state folder."
            )
        self.forget_last_run(mode)
        home = demo_dir / "device"
        shutil.rmtree(home / "state", ignore_errors=True)  # a fresh device each run: the whole install shows
        home.mkdir(parents=True, exist_ok=True)
        trusted = home / "trusted"  # the demo's key, and the operator's own public keys if any
        shutil.rmtree(trusted, ignore_errors=True)
        trusted.mkdir()
        key.public.save(trusted / f"{key.key_id}.pub")
        for own in keys_dir().glob("*.pub"):
            shutil.copy(own, trusted / own.name)
        device = LocalDevice(
            device_id=DEVICE,
            fleet=FLEET,
            home=home,
            registry_url=registry_url,
            trusted_keys=[trusted],
            groups=[GROUP],
            mqtt_url=self.opts.broker if mode == "mqtt" else None,
            channel=CHANNEL if mode == "http" else None,
        )
        agent = LocalAgent(device)
        device.log_path.unlink(missing_ok=True)
        with self.console.status("starting edge-agent ..."):
            agent.start()
            stack.callback(self._stop_agent, agent)
            self.wait_reported(agent)
        self.say(
            f"edge-agent {DEVICE} started (pid {agent.proc.pid if agent.proc else '?'}), "
            f"its API will be {device.api_url}\n  config {device.config_path}\n  log    {device.log_path}"
        )
        return agent, mode

    def wait_reported(self, agent: LocalAgent, timeout_s: float = 60.0) -> None:
        """The agent writes its reported state once it has started (before any transport)."""
        path = agent.device.home / "state" / "reported.json"
        deadline = time.monotonic() + timeout_s
        while not path.exists():
            if not agent.alive():
                raise FleetError(f"the agent exited:\n{agent.log_tail()}")
            if time.monotonic() > deadline:
                raise FleetError(f"the agent did not start within {timeout_s:.0f} s:\n{agent.log_tail()}")
            time.sleep(0.2)

    def forget_last_run(self, mode: str) -> None:
        """A fresh device must not pick up the previous run's desired state before this run's."""
        if mode == "mqtt":
            with BrokerSession(self.opts.broker, FLEET) as session:
                session.clear_retained(device_topic(FLEET, DEVICE, "desired"))
        (self.opts.home / "registry" / "channels" / f"{CHANNEL}.json").unlink(missing_ok=True)

    def _stop_agent(self, agent: LocalAgent) -> None:
        code = agent.stop()
        self.say(f"stopped edge-agent {DEVICE} (SIGTERM, exit status {code})")

    def wait_online(self, watch: FleetWatch, agent: LocalAgent, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            view = watch.refresh().devices.get(DEVICE)
            if view and view.online and view.reported:
                return
            if not agent.alive():
                raise FleetError(f"the agent exited:\n{agent.log_tail()}")
            watch.pump(0.5)
        raise FleetError(f"{DEVICE} did not come online on the broker within {timeout_s:.0f} s")

    def show_event(self, event: Event) -> None:
        from build_side.cli.fleet_render import event_line

        self.console.print(event_line(event))

    def deploy(
        self, history: History, key: SigningKey, registry: Path, watch: FleetWatch | None, agent: LocalAgent
    ) -> None:
        policy = DeploymentPolicy(health_timeout_s=300, bench_after_install=True)
        auto = self.opts.variant == "auto"
        req = DeployRequest(
            self.ref,
            str(registry),
            devices=[DEVICE] if watch else [],
            channels=[] if watch else [CHANNEL],
            variant_policy=VariantPolicy() if auto else VariantPolicy(variant=self.opts.variant),
            policy=policy,
        )
        [pub] = deploy(
            req,
            fleet=FLEET,
            key=key,
            history=history,
            session=watch.session if watch else None,
            snapshot=watch.snapshot if watch else None,
        )
        variant = "the device's own choice" if auto else f"variant {self.opts.variant}"
        self.say(
            f"signed desired state: revision {pub.state.revision}, deployment {pub.state.deployment_id}, "
            f"{variant}, bench after install\n  -> {pub.where}"
        )
        if watch:
            outcome = watch.wait_for_outcomes({DEVICE: pub.state.deployment_id}, self.opts.deploy_timeout_s)
            out = outcome[DEVICE]
            state, detail = out.state, out.detail
        else:
            state, detail = self.follow_local_events(agent, history, pub.state.deployment_id)
        self.result.outcome = str(state or "TIMEOUT")
        if state != DeploymentState.SUCCEEDED:
            raise FleetError(
                f"the deployment ended {state or 'without a result'}: {detail}\n{agent.log_tail()}"
            )
        self.say(f"[green]{DEVICE} runs {self.ref}[/]")

    def follow_local_events(
        self, agent: LocalAgent, history: History, deployment_id: str
    ) -> tuple[DeploymentState | None, str]:
        """HTTP mode: the agent's events.jsonl is the only place its events go."""
        path = agent.device.home / "state" / "events.jsonl"
        seen = 0
        deadline = time.monotonic() + self.opts.deploy_timeout_s
        while time.monotonic() < deadline:
            lines = path.read_text().splitlines() if path.exists() else []
            for line in lines[seen:]:
                try:
                    event = Event.model_validate_json(line)
                except ValueError:
                    break  # a line being written; read it next time
                seen += 1
                history.add_event(FLEET, event)
                if event.deployment_id != deployment_id:
                    continue
                self.show_event(event)
                if event.state in TERMINAL_STATES:
                    detail = f"{event.error.code}: {event.error.detail}" if event.error else event.message
                    return event.state, detail
            if not agent.alive():
                raise FleetError(f"the agent exited:\n{agent.log_tail()}")
            time.sleep(0.3)
        return None, f"no result within {self.opts.deploy_timeout_s:.0f} s"

    def client(self, agent: LocalAgent):  # type: ignore[no-untyped-def]
        from openai import OpenAI

        with self.console.status("waiting for the model to be served ..."):
            agent.wait_api(timeout_s=120, path="/readyz")
        return OpenAI(base_url=agent.device.api_url + "/v1", api_key="not-needed-on-localhost")

    def ask_adapters(self, agent: LocalAgent) -> None:
        """Each adapter, by name, the demo's requests; its own system prompt and answer budget come
        from its card in the manifest (the agent applies them), so the request is the bare text."""
        from build_side.tasks import ops

        client = self.client(agent)
        cards = [m for m in client.models.list().data if ":" in m.id]
        if not cards:
            raise FleetError(f"the device serves no adapters: {[m.id for m in client.models.list().data]}")
        expected = {r.input: r for r in ops.load_requests()}
        for card in cards:
            info = (card.model_extra or {}).get("adapter") or {}
            fmt = (info.get("prompt") or {}).get("answer_format", "text")
            skill = "intent" if fmt == "label" else "command" if fmt == "json" else None
            self.say(f"[bold]{card.id}[/]: {info.get('trained_for', '')}")
            for text in DEMO_REQUESTS:
                reply = client.chat.completions.create(
                    model=card.id, messages=[{"role": "user", "content": text}], temperature=0.0
                )
                answer = (reply.choices[0].message.content or "").strip()
                request = expected[text]
                right = (
                    ops.intent_hit(answer, request)
                    if skill == "intent"
                    else ops.command_hit(answer, request)
                    if skill == "command"
                    else None
                )
                mark = "[green]right[/]" if right else "[red]wrong[/]" if right is not None else ""
                want = request.intent if skill == "intent" else json.dumps(request.command.as_dict())
                self.say(f"  Q: {text}\n  A: {answer}  {mark}" + ("" if right else f"\n     expected {want}"))
                self.result.answers.append({"model": card.id, "request": text, "answer": answer})
                if right is not None:
                    self.result.asked += 1
                    self.result.right += bool(right)
        self.say(
            f"[bold]{self.result.right} of {self.result.asked} answers right[/] "
            "(requests none of the adapters trained on; README has the whole held-out set's scores)"
        )

    def ask(self, agent: LocalAgent) -> None:
        client = self.client(agent)
        model = client.models.list().data[0].id
        self.say(
            f"model {model} (the base, no adapter) at {agent.device.api_url}/v1 (official openai client)"
        )
        self.say(f"[bold]Q:[/] {self.opts.prompt}")
        self.console.print("[bold]A:[/] ", end="")
        started = time.monotonic()
        parts: list[str] = []
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": self.opts.prompt or ""}],
            max_tokens=self.opts.max_tokens,
            temperature=0.0,
            stream=True,
        )
        for chunk in stream:
            text = chunk.choices[0].delta.content if chunk.choices else None
            if text:
                parts.append(text)
                self.console.print(text, end="", markup=False, highlight=False)
        self.console.print()
        self.result.answer = "".join(parts).strip()
        self.say(f"[dim]({len(parts)} chunks in {time.monotonic() - started:.1f} s)[/]")

    def show_bench(self, history: History, watch: FleetWatch | None, agent: LocalAgent) -> None:
        record = self.wait_bench(history, watch, agent)
        if record is None:
            self.say("[yellow]the device sent no bench record[/]")
            return
        self.result.bench = record
        self.say(
            f"{DEVICE}  {record.model}  {record.variant} on {record.provider}  {record.scenario}\n"
            f"  [bold]{bench_line(record)}[/]"
            + (f", peak RSS {record.peak_rss_mb:.0f} MB" if record.peak_rss_mb else "")
        )

    def wait_bench(
        self, history: History, watch: FleetWatch | None, agent: LocalAgent, timeout_s: float = 120.0
    ) -> BenchRecord | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if watch:
                watch.pump(0.5)
                rec = watch.snapshot.devices.get(DEVICE, DeviceView(DEVICE)).last_bench
            else:
                rec = self.local_bench(agent)
                if rec:
                    history.add_bench(FLEET, DEVICE, rec)
                time.sleep(0.5)
            if rec and rec.time.timestamp() >= self.wall_start - 2:  # measured in this run
                return rec
        return None

    def local_bench(self, agent: LocalAgent) -> BenchRecord | None:
        """HTTP mode: the bench record the agent keeps in its state folder (or its /status)."""
        for path in sorted((agent.device.home / "state").glob("bench*.json*")):
            lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
            for line in reversed(lines):
                try:
                    return BenchRecord.model_validate_json(line)
                except ValueError:
                    continue
            try:
                return BenchRecord.model_validate(json.loads(path.read_text()))
            except ValueError:
                continue
        return None

    def show_status(self, history: History, watch: FleetWatch | None, agent: LocalAgent) -> None:
        from build_side.cli.fleet_render import status_table

        if watch:
            snap = collect_snapshot(watch.session, history)
            source = (
                "from the broker's retained messages and the events seen; "
                f"`slmops fleet status --fleet {FLEET}` shows the same"
            )
        else:
            snap = self.local_snapshot(history, agent)
            source = "from the device's own report in its state folder (there is no broker to read)"
        self.say(f"[dim]{source}[/]")
        self.console.print(status_table(snap))

    def local_snapshot(self, history: History, agent: LocalAgent) -> FleetSnapshot:
        snap = FleetSnapshot(FLEET)
        view = snap.view(DEVICE)
        path = agent.device.home / "state" / "reported.json"
        if path.exists():
            view.reported = ReportedState.model_validate_json(path.read_bytes())
        view.online = agent.alive()
        snap.add_history(history)
        return snap


__all__ = ["DemoOptions", "DemoResult", "Story"]
