"""What one bench case is (an engine on a model at a provider and thread count) and the scenarios.

Pydantic models, because they cross the process boundary to each case's child process as JSON.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.errors import ContractError


class CaseSpec(BaseModel):
    """One engine on one model file or folder, with one provider and thread count."""

    model_config = ConfigDict(extra="forbid")

    engine: str = Field(description="registered engine name, see bench.engines.ENGINES")
    path: Path = Field(description="ONNX variant folder, Hugging Face folder or GGUF file")
    model: str = Field(description="bundle name@version, or the path it came from")
    variant: str
    provider: str = "CPUExecutionProvider"
    threads: int | None = None
    precision: str | None = None
    quantization: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    label: str = ""
    context_tokens: int | None = Field(None, description="longest prompt + generation it must hold")

    def default_label(self, with_provider: bool, with_threads: bool) -> str:
        parts = [self.variant if self.engine == "onnxruntime-genai" else f"{self.engine}:{self.variant}"]
        if with_provider:
            parts.append(self.provider.removesuffix("ExecutionProvider"))
        if with_threads and self.threads:
            parts.append(f"t{self.threads}")
        return "/".join(parts)


class Scenario(BaseModel):
    """Prompts as token ids (identical for every case) and a fixed number of tokens to generate."""

    model_config = ConfigDict(extra="forbid")

    name: str
    prompts: list[list[int]] = Field(min_length=1)
    gen_tokens: int = Field(ge=1)


SCENARIO_RE = re.compile(r"^(?:pp(?P<pp>\d+))?-?(?:tg(?P<tg>\d+))?$")


def parse_scenario(name: str) -> tuple[int, int] | None:
    """`pp128-tg128` -> (128, 128); `pp512` -> (512, 1); `tg64` -> (1, 64); `chat` -> None.

    Like llama-bench: a prefill-only scenario still makes the first token (TTFT needs it), and a
    generation-only one starts from a single prompt token.
    """
    if name == "chat":
        return None
    m = SCENARIO_RE.match(name)
    if not m or not (m["pp"] or m["tg"]):
        raise ContractError("--scenario", f"{name!r} is not ppN, tgM, ppN-tgM or chat")
    pp, tg = int(m["pp"] or 1), int(m["tg"] or 1)
    if pp < 1 or tg < 1:
        raise ContractError("--scenario", f"{name!r}: lengths must be at least 1")
    return pp, tg


def fixed_prompt(ids: list[int], n: int) -> list[int]:
    """Exactly n token ids from a tokenized text, repeating it when it is shorter."""
    if not ids:
        raise ValueError("no token ids to build a prompt from")
    reps = -(-n // len(ids))
    return (ids * reps)[:n]


__all__ = ["CaseSpec", "Scenario", "fixed_prompt", "parse_scenario"]
