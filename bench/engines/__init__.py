"""Engines a case can run on, registered here explicitly by name -> "module:Class".

Nothing is imported until a case asks for an engine, so the parent process never loads torch or
llama.cpp, and a missing optional engine fails only the cases that need it.
"""

from __future__ import annotations

import importlib

from bench.engines.base import Engine, EngineInfo
from edge_agent.errors import ModelRuntimeError

ENGINES: dict[str, str] = {
    "onnxruntime-genai": "bench.engines.ort_genai:OrtGenaiEngine",
    "pytorch": "bench.engines.pytorch:PytorchEngine",
    "llama.cpp": "bench.engines.llamacpp:LlamaCppEngine",
}

INSTALL_HINTS = {
    "pytorch": "pip install 'slmops[build]' (torch and transformers)",
    "llama.cpp": "pip install 'slmops[llamacpp]' (compiles llama.cpp, a few minutes)",
}


def engine_class(name: str) -> type[Engine]:
    if name not in ENGINES:
        raise ModelRuntimeError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")
    module, cls = ENGINES[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        hint = INSTALL_HINTS.get(name, "")
        raise ModelRuntimeError(f"engine {name!r} is not available ({exc}); {hint}") from exc


__all__ = ["ENGINES", "Engine", "EngineInfo", "engine_class"]
