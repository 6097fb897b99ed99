"""Write the project's small task data sets from templates and a vocabulary (fixed seed: reproducible).

    python manifests/data/generate.py          # rewrites intents.jsonl and commands.jsonl beside it

Both sets are requests a fleet operator types into a console ("push tiny-chat 1.4.0 to the kitchen
group", "kiosk-7 is stuck, bounce it"):
- intents.jsonl:  {input, output: intent, label: intent}: a classifier over eight intents.
- commands.jsonl: {input, output: one JSON command, label: intent}: a generator that fills slots.
Each set is sampled with its own seed, so the two adapters train on different requests.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

INTENTS = ("deploy", "rollback", "status", "logs", "restart", "bench", "stop", "publish")

BUNDLES = [
    "tiny-chat", "support-bot", "smollm2-intents", "kiosk-assistant", "triage-model",
    "qwen-lite", "phi-mini", "shelf-reader", "voice-notes", "menu-helper",
]  # fmt: skip
DEVICES = [
    "kiosk-7", "edge-01", "edge-12", "cam-kitchen-2", "gw-berlin-3", "pi-lab-4", "jetson-12",
    "shelf-scanner-5", "till-03", "dock-9", "van-22", "gate-east-1",
]  # fmt: skip
GROUPS = ["kitchen", "warehouse", "lab", "canary", "store-eu", "store-us", "beta", "factory-floor", "north"]
CHANNELS = ["stable", "beta", "canary"]

# {dt}: a device or group phrase; {d}: a device phrase; {b}: bundle; {v}: version; {c}: channel.
TEMPLATES: dict[str, list[str]] = {
    "deploy": [
        "push {b} {v} to {dt}",
        "deploy {b}@{v} on {dt}",
        "roll out {b} version {v} to {dt}",
        "install {b} {v} on {dt} please",
        "ship {b} v{v} to {dt}",
        "can you put {b} {v} on {dt}?",
        "update {dt} to {b} {v}",
        "I want {dt} running {b} {v}",
        "start the rollout of {b} {v} for {dt}",
        "upgrade {dt} to version {v} of {b}",
        "send the new {b} ({v}) out to {dt}",
        "get {b} {v} onto {dt} today",
    ],
    "rollback": [
        "roll back {dt}",
        "revert {dt} to the previous version",
        "undo the last deployment on {dt}",
        "{dt} is broken since the update, go back to the old model",
        "restore the previous release on {dt}",
        "the new model on {dt} answers garbage, roll it back",
        "downgrade {dt} to what it had before",
        "please take {dt} back to the last good version",
        "rollback {dt} now",
        "the update hurt {dt}, revert it",
    ],
    "status": [
        "what's running on {dt}?",
        "is {d} online?",
        "show me the status of {dt}",
        "which version does {dt} have",
        "how is {dt} doing",
        "give me the fleet status",
        "did the rollout to {dt} finish?",
        "status of {dt}",
        "is {dt} healthy right now",
        "which model is active on {dt}?",
        "list what every device is running",
        "check whether {dt} picked up the new bundle",
    ],
    "logs": [
        "show the logs of {d}",
        "tail the agent log on {d}",
        "what errors did {d} report",
        "print the last 50 log lines from {d}",
        "why did {d} fail? show me its log",
        "get me the journal of the edge agent on {d}",
        "dump the recent log output of {dt}",
        "I need to see what {d} logged overnight",
        "open the logs for {dt}",
        "grep the logs on {d} for errors",
    ],
    "restart": [
        "restart the agent on {d}",
        "reboot {dt}",
        "bounce the service on {d}",
        "{d} is stuck, restart it",
        "kick the edge agent on {dt}",
        "power cycle {d}",
        "restart {dt} please",
        "the agent on {d} hangs, give it a restart",
        "cycle the model server on {dt}",
        "relaunch the edge agent on {d}",
    ],
    "bench": [
        "benchmark {b} on {d}",
        "how fast is {b} on {dt}? run a bench",
        "measure tokens per second on {d}",
        "run the speed test on {dt}",
        "compare int4 and fp32 of {b} on {d}",
        "what latency does {b} get on {d}? measure it",
        "bench {dt}",
        "time the first token of {b} on {dt}",
        "run a throughput benchmark of {b} on {d}",
        "profile decode speed on {d}",
    ],
    "stop": [
        "stop serving on {d}",
        "pause the rollout to {dt}",
        "take {d} offline",
        "halt everything on {dt}",
        "shut the model down on {d}",
        "stop the agent on {dt} until further notice",
        "freeze deployments to {dt}",
        "turn off inference on {d}",
        "cancel the rollout on {dt}",
        "stop {dt}",
    ],
    "publish": [
        "publish {b} {v} to the registry",
        "upload the new build of {b} ({v})",
        "release {b} {v} on the {c} channel",
        "put {b}@{v} in the registry",
        "sign and publish {b} version {v}",
        "make {b} {v} available on {c}",
        "push the {b} {v} bundle to the registry",
        "promote {b} {v} to {c}",
        "publish version {v} of {b}",
        "add {b} {v} to the {c} channel",
    ],
}


def version(rng: random.Random) -> str:
    return f"{rng.randint(0, 3)}.{rng.randint(0, 12)}.{rng.randint(0, 9)}"


def device_phrase(rng: random.Random) -> tuple[str, str]:
    d = rng.choice(DEVICES)
    return rng.choice([d, d, f"device {d}", f"the {d} box"]), f"device:{d}"


def target_phrase(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.5:
        return device_phrase(rng)
    g = rng.choice(GROUPS)
    phrase = rng.choice([f"the {g} group", f"all {g} devices", f"group {g}", f"every device in {g}"])
    return phrase, f"group:{g}"


def make_request(intent: str, rng: random.Random) -> tuple[str, dict[str, str]]:
    """One request of this intent and the command it means."""
    template = rng.choice(TEMPLATES[intent])
    slots: dict[str, str] = {}
    command: dict[str, str] = {"action": intent}
    if "{b}" in template:
        slots["b"] = rng.choice(BUNDLES)
    if "{v}" in template:
        slots["v"] = version(rng)
    if "{c}" in template:
        slots["c"] = rng.choice(CHANNELS)
    if "{d}" in template:
        slots["d"], command["target"] = device_phrase(rng)
    if "{dt}" in template:
        slots["dt"], command["target"] = target_phrase(rng)
    if "target" not in command and intent != "publish":
        command["target"] = "fleet"
    if "b" in slots:
        command["bundle"] = f"{slots['b']}@{slots['v']}" if "v" in slots else slots["b"]
    if intent == "publish":
        command["channel"] = slots.get("c", "stable")
    text = template.format(**slots)
    if rng.random() < 0.15:
        text = text.capitalize()
    return text, command


def sample(per_intent: int, seed: int) -> list[tuple[str, str, dict[str, str]]]:
    rng = random.Random(seed)
    rows, seen = [], set()
    for intent in INTENTS:
        made = 0
        while made < per_intent:
            text, command = make_request(intent, rng)
            if text.lower() in seen:
                continue
            seen.add(text.lower())
            rows.append((intent, text, command))
            made += 1
    rng.shuffle(rows)
    return rows


def main() -> None:
    here = Path(__file__).resolve().parent
    with (here / "intents.jsonl").open("w") as f:
        for intent, text, _ in sample(per_intent=40, seed=8):
            f.write(json.dumps({"input": text, "output": intent, "label": intent}) + "\n")
    with (here / "commands.jsonl").open("w") as f:
        for intent, text, command in sample(per_intent=30, seed=80):
            f.write(json.dumps({"input": text, "output": json.dumps(command), "label": intent}) + "\n")


if __name__ == "__main__":
    main()
