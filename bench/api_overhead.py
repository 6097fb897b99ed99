"""Decode speed through the agent's HTTP API (streaming) against onnxruntime-genai called directly.

    python -m bench.api_overhead --model-dir work/smollm2-int4 [--tokens 128] [--reps 7] [--json FILE]

One run, side by side: the direct path is a plain onnxruntime-genai loop in this process (generate,
read the token, detokenize); the API path is `edge-agent serve` in a child process (as on a device)
streamed over HTTP with `/v1/completions` and `stream=true`. Both generate exactly `--tokens` tokens
(min = max length) from the same prompt, greedily, with the same default session options. The two
paths alternate repetition by repetition so that drift in the machine's load hits both alike.

decode tok/s = (generated tokens - 1) / (time of the last token - time of the first token); on the API
path the times are those at which the client received the first and the last text chunk, and the
token count is the server's `usage.completion_tokens`.

On a shared or busy machine wall-clock rates drift; the CPU time each path spends per generated token
(this process for the direct path; the server process, and this client, for the API path) is printed
beside them, as a figure of the API's own cost that load does not move much.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import onnxruntime_genai as og
import psutil

from edge_agent.bench_metrics import percentile

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def direct_decode_tok_s(model: og.Model, tokenizer: og.Tokenizer, prompt_ids: list[int], n: int) -> float:
    params = og.GeneratorParams(model)
    total = len(prompt_ids) + n
    params.set_search_options(max_length=total, min_length=total, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt_ids)
    stream = tokenizer.create_stream()
    first = last = 0.0
    count = 0
    while not generator.is_done():
        generator.generate_next_token()
        stream.decode(generator.get_next_tokens()[0])
        last = time.perf_counter()
        count += 1
        if count == 1:
            first = last
    assert count == n, f"generated {count}, wanted {n}"
    return (count - 1) / (last - first)


def api_decode_tok_s(client: httpx.Client, url: str, model: str, n: int) -> float:
    body = {
        "model": model,
        "prompt": PROMPT,
        "max_tokens": n,
        "min_tokens": n,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    first = last = 0.0
    usage = None
    with client.stream("POST", f"{url}/v1/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            if chunk.get("choices") and chunk["choices"][0]["text"]:
                last = time.perf_counter()
                first = first or last
    assert usage and usage["completion_tokens"] == n, usage
    return (n - 1) / (last - first)


def start_server(model_dir: Path, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "edge_agent", "serve", "--model-dir", str(model_dir), "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"edge-agent serve exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("edge-agent serve did not become ready")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, required=True, help="a variant folder (genai_config.json)")
    ap.add_argument("--tokens", type=int, default=128, help="tokens generated per run (fixed)")
    ap.add_argument("--reps", type=int, default=7, help="measured repetitions of each path")
    ap.add_argument("--warmup", type=int, default=2, help="unmeasured runs of each path first")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    model = og.Model(str(args.model_dir))
    tokenizer = og.Tokenizer(model)
    prompt_ids = [int(t) for t in tokenizer.encode(PROMPT)]
    port = free_port()
    server = start_server(args.model_dir, port)
    url = f"http://127.0.0.1:{port}"
    name = httpx.get(f"{url}/v1/models").json()["data"][0]["id"]
    direct: list[float] = []
    api: list[float] = []
    cpu_ms: dict[str, list[float]] = {"direct": [], "server": [], "client": []}
    server_proc = psutil.Process(server.pid)

    def server_cpu() -> float:
        t = server_proc.cpu_times()
        return t.user + t.system

    def run_direct() -> None:
        c0 = time.process_time()
        direct.append(direct_decode_tok_s(model, tokenizer, prompt_ids, args.tokens))
        cpu_ms["direct"].append((time.process_time() - c0) * 1000 / args.tokens)

    def run_api(client: httpx.Client) -> None:
        c0, s0 = time.process_time(), server_cpu()
        api.append(api_decode_tok_s(client, url, name, args.tokens))
        cpu_ms["server"].append((server_cpu() - s0) * 1000 / args.tokens)
        cpu_ms["client"].append((time.process_time() - c0) * 1000 / args.tokens)

    try:
        with httpx.Client(timeout=300) as client:
            for _ in range(args.warmup):
                direct_decode_tok_s(model, tokenizer, prompt_ids, args.tokens)
                api_decode_tok_s(client, url, name, args.tokens)
            for rep in range(args.reps):
                pair = [run_direct, lambda: run_api(client)]
                for run in pair if rep % 2 == 0 else reversed(pair):
                    run()
                print(
                    f"rep {rep + 1}: direct {direct[-1]:7.1f} tok/s   api {api[-1]:7.1f} tok/s   "
                    f"CPU ms/token: direct {cpu_ms['direct'][-1]:.2f}, server {cpu_ms['server'][-1]:.2f}, "
                    f"client {cpu_ms['client'][-1]:.2f}",
                    flush=True,
                )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    d, a = percentile(direct, 50), percentile(api, 50)
    ratios = [x / y for x, y in zip(api, direct, strict=True)]
    result = {
        "model_dir": str(args.model_dir),
        "tokens": args.tokens,
        "prompt_tokens": len(prompt_ids),
        "reps": args.reps,
        "cpu_count": os.cpu_count(),
        "direct_decode_tok_s": direct,
        "api_decode_tok_s": api,
        "direct_median": d,
        "api_median": a,
        "ratio_of_medians": a / d,
        "median_of_paired_ratios": percentile(ratios, 50),
        "cpu_ms_per_token": cpu_ms,
        "cpu_ms_per_token_median": {k: percentile(v, 50) for k, v in cpu_ms.items()},
    }
    print(
        f"decode tok/s, median of {args.reps}: direct {d:.1f}, API (streaming) {a:.1f}; "
        f"API/direct {a / d:.3f} (median of paired ratios {result['median_of_paired_ratios']:.3f})"
    )
    cpu = result["cpu_ms_per_token_median"]
    print(
        f"CPU ms per token, median: direct {cpu['direct']:.2f}; API server {cpu['server']:.2f} "
        f"({cpu['server'] / cpu['direct'] - 1:+.1%}), client {cpu['client']:.2f}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
