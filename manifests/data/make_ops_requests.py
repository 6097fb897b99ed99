"""Write the unlabelled operator requests that a task teacher labels for distillation (fixed seed).

    python manifests/data/make_ops_requests.py     # rewrites ops_requests.jsonl beside it (2,400 lines)

Each line is {"id", "prompt"}: a request only, no answer (the teacher writes the answers). This
generator is kept apart from `generate.py` (the adapters' training data) and from the hand-written
held-out set `../eval/ops_heldout.jsonl`: its own templates, verbs, device names, groups and bundles,
so a student scored on the held-out set is scored on requests neither generator wrote.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

COUNT = 2400
SEED = 20261201

BUNDLES = [
    "label-printer", "stock-counter", "door-greeter", "noise-filter",
    "parcel-tagger", "dock-planner", "crop-watcher", "meter-reader", "queue-helper", "shift-notes",
    "invoice-ocr", "plant-doctor", "hall-guide", "cart-tracker",
]  # fmt: skip
DEVICES = [
    "rack-a1", "rack-b7", "tram-104", "forklift-3", "beacon-55", "scale-09", "lobby-2",
    "truck-71", "mill-sensor-4", "cooler-12", "press-8", "depot-gw-2", "ferry-6", "pump-31",
    "lane-11", "shelf-cam-14",
]  # fmt: skip
GROUPS = ["depot", "ferries", "mills", "night-crew", "region-south", "pilot-b", "trams", "cold-chain"]
CHANNELS = ["stable", "beta", "canary"]

# {t}: device or group; {d}: device only; {b}: bundle; {v}: version; {c}: channel.
TEMPLATES: dict[str, list[str]] = {
    "deploy": [
        "move {t} onto {b} {v}",
        "{t} should run {b} {v} from now on",
        "bring {b} {v} to {t}",
        "set {t} up with {b} release {v}",
        "go ahead and deploy {b} {v} to {t}",
        "{b} {v} for {t}, please",
        "we need {b} at {v} on {t}",
        "switch {t} over to {b} {v}",
    ],
    "rollback": [
        "put {t} back on its previous release",
        "{t} misbehaves after the upgrade, go back",
        "return {t} to the version it had yesterday",
        "back out the latest release from {t}",
        "reverse the update on {t}",
        "{t} needs the prior model again",
    ],
    "status": [
        "what version is {t} on right now",
        "tell me how {t} is doing",
        "any problems with {t}?",
        "is {d} up",
        "current state of {t}",
        "which bundle does {t} serve",
        "has {t} finished updating?",
    ],
    "logs": [
        "fetch the recent log of {d}",
        "let me read the agent output from {d}",
        "what has {d} been logging",
        "pull the error log off {d}",
        "show me what went wrong on {d}, logs please",
        "collect logs from {t}",
    ],
    "restart": [
        "give {d} a fresh start",
        "restart whatever runs on {t}",
        "{d} froze, reboot it",
        "please reload the agent on {d}",
        "do a restart of {t}",
        "{d} is unresponsive, restart the service",
    ],
    "bench": [
        "how quick is {b} on {d}",
        "time {b} on {t}",
        "run a latency check on {d}",
        "get me decode speed numbers for {t}",
        "benchmark {t} with {b}",
        "test the throughput of {d}",
    ],
    "stop": [
        "halt the rollout for {t}",
        "no more updates to {t} for now",
        "switch off serving on {d}",
        "stop {t} right away",
        "block deployments to {t}",
        "shut down inference on {t}",
    ],
    "publish": [
        "register {b} {v} for the {c} channel",
        "ship {b} {v} to the registry on {c}",
        "make release {v} of {b} public",
        "publish {b} {v}",
        "put out {b} {v} as a new release",
        "{b} {v} is ready, publish it to {c}",
    ],
}


def _version(rng: random.Random) -> str:
    return f"{rng.randint(0, 4)}.{rng.randint(0, 15)}.{rng.randint(0, 12)}"


def _device(rng: random.Random) -> str:
    d = rng.choice(DEVICES)
    return rng.choice([d, d, f"unit {d}", f"the {d} node"])


def _target(rng: random.Random) -> str:
    if rng.random() < 0.55:
        return _device(rng)
    g = rng.choice(GROUPS)
    return rng.choice([f"the {g} group", f"every {g} unit", f"the {g} fleet", f"{g} devices"])


def requests(count: int = COUNT, seed: int = SEED) -> list[dict[str, str]]:
    """`count` distinct requests, the eight intents in turn."""
    rng = random.Random(seed)
    intents = list(TEMPLATES)
    seen: set[str] = set()
    out: list[dict[str, str]] = []
    while len(out) < count:
        intent = intents[len(out) % len(intents)]
        text = rng.choice(TEMPLATES[intent]).format(
            t=_target(rng), d=_device(rng), b=rng.choice(BUNDLES), v=_version(rng), c=rng.choice(CHANNELS)
        )
        if rng.random() < 0.15:
            text = text[0].upper() + text[1:]
        if text not in seen:
            seen.add(text)
            out.append({"id": f"ops-{len(out):05d}", "prompt": text})
    return out


def main() -> None:
    path = Path(__file__).with_name("ops_requests.jsonl")
    path.write_text("".join(json.dumps(r) + "\n" for r in requests()))
    print(f"wrote {COUNT} requests to {path}")


if __name__ == "__main__":
    main()
