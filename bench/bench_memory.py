"""Peak memory and wall time of linting a 7B-parameter decoder built on meta (issue 14).

    python bench/bench_memory.py                    # CLI and API, 128 tokens
    python bench/bench_memory.py --tokens 16 --layers 32

The model is transformers' `LlamaForCausalLM(LlamaConfig())` at its defaults (32 layers,
hidden 4096, MLP 11008, vocabulary 32000, `use_cache=True`): 6.74B parameters, 27 GB in
float32 if it were real. A user builds it as `with torch.device("meta"): ...`, and so does
the file this script writes (outside the project, in a temporary folder). Each row is one
fresh process, measured from outside: wall time and CPU time (user + system, every process:
on a shared machine the wall time follows the load, the CPU time does not); the peak RSS of its largest process (the
figure `/usr/bin/time -v` gives); and the peak of the whole process tree's PSS, where the
pages `archlint check` shares with the forked child that lints are counted once.

- importing torch and transformers' Llama: the floor every row pays;
- `archlint check FILE --input-shape 1,T:int64 --no-cache`: the CLI end to end;
- `archlint.lint(model, ids)` in a script: the API, build included.

Beside archlint's parameter and MAC counts, the closed form: parameters from the config, and
MACs per token = every Linear's weights (q, k, v, o, gate, up, down per layer, and lm_head),
plus attention's two matrix products (T x T x hidden each, per layer). At 128 tokens that is
845.7 G + 4.3 G = 850.0 GMACs, the figure issue 11 quotes for the 7B Llama.

Requires transformers. Figures are printed, never asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODEL_FILE = '''\
"""A 7B Llama built on meta, as a user would (written by archlint's bench/bench_memory.py)."""
import torch
from transformers import LlamaConfig, LlamaForCausalLM

with torch.device("meta"):
    model = LlamaForCausalLM(LlamaConfig(num_hidden_layers={layers}))
'''

API_SCRIPT = '''\
import json, sys, torch, archlint
from transformers import LlamaConfig, LlamaForCausalLM
with torch.device("meta"):
    model = LlamaForCausalLM(LlamaConfig(num_hidden_layers={layers}))
report = archlint.lint(model, torch.zeros(1, {tokens}, dtype=torch.long, device="meta"))
print(json.dumps({{"tracer": report.tracer, **report.summary, "coverage": report.coverage["params"],
                   "findings": len(report.findings), "notes": report.notes}}))
'''

FLOOR = "import torch; from transformers import LlamaConfig, LlamaForCausalLM"

# Runs a command and reports its wall time and two peaks, sampled from /proc every 50 ms over
# the process and every process below it: the largest single process's peak RSS (VmHWM, what
# /usr/bin/time -v reports), and the largest sum of their PSS (proportional set size: pages
# shared between `archlint check` and its forked child counted once, split between them).
# getrusage's RUSAGE_CHILDREN is not used: a short-lived helper that transformers' import
# spawns (`ldconfig -p`) reports a high-water mark above the importing process's own.
MEASURE = r'''
import json, os, resource, subprocess, sys, time

def tree(root):
    children = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(pid))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found

def field_kb(path, name):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(name):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0

started = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
hwm, pss = 0, 0
while proc.poll() is None:
    pids = tree(proc.pid)
    hwm = max([hwm] + [field_kb(f"/proc/{p}/status", "VmHWM:") for p in pids])
    pss = max(pss, sum(field_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids))
    time.sleep(0.05)
stdout, stderr = proc.communicate()
used = resource.getrusage(resource.RUSAGE_CHILDREN)  # CPU time adds up over every descendant
print(json.dumps({"seconds": time.perf_counter() - started, "rc": proc.returncode,
                  "cpu": used.ru_utime + used.ru_stime,
                  "peak_mb": hwm / 1024, "pss_mb": pss / 1024,
                  "stdout": stdout, "stderr": stderr[-2000:]}))
'''


def measured(argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, *argv], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def expected(layers: int, tokens: int) -> tuple[int, int]:
    """(parameters, MACs) of LlamaConfig's defaults with `layers` layers, in closed form."""
    from transformers import LlamaConfig

    c = LlamaConfig(num_hidden_layers=layers)
    h, m, v = c.hidden_size, c.intermediate_size, c.vocab_size
    kv = c.num_key_value_heads * (h // c.num_attention_heads)
    per_layer = h * h + 2 * h * kv + h * h + 3 * h * m  # q, k, v, o; gate, up, down
    params = v * h + layers * (per_layer + 2 * h) + h + (0 if c.tie_word_embeddings else v * h)
    macs = tokens * (layers * per_layer + v * h) + layers * 2 * tokens * tokens * h
    return params, macs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--layers", type=int, default=32, help="LlamaConfig default: 32 (7B)")
    args = parser.parse_args()
    params, macs = expected(args.layers, args.tokens)
    print(f"LlamaForCausalLM(LlamaConfig(num_hidden_layers={args.layers})) on meta, "
          f"input 1x{args.tokens} token ids")
    print(f"closed form: {params:,} parameters, {macs / 1e9:.2f} GMACs\n")
    print("| run | wall s | CPU s | peak RSS | peak PSS, all processes | tracer | params | GMACs "
          "| coverage |")
    print("|---|--:|--:|--:|--:|---|--:|--:|--:|")
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "llama_meta.py")
        with open(path, "w") as f:
            f.write(MODEL_FILE.format(layers=args.layers))
        floor = measured([sys.executable, "-c", FLOOR])
        print(row("import torch, transformers' Llama", floor, "| | | | |"), flush=True)
        # In this process tree, not handed to a warm worker whose memory and time would not
        # be counted here.
        cli = measured([sys.executable, "-m", "archlint", "check", path, "--format", "json",
                        "--input-shape", f"1,{args.tokens}:int64", "--no-cache", "--no-worker",
                        "--exit-zero"])
        try:
            model = json.loads(cli["stdout"])["models"][0]
            print(row("archlint check (CLI)", cli, figures(model["tracer"], model["summary"],
                                                           model["coverage"]["params"])), flush=True)
        except (ValueError, KeyError, IndexError):
            print(f"| archlint check (CLI) | failed (exit {cli['rc']}): {cli['stderr'][-300:]} |")
        api = measured([sys.executable, "-c", API_SCRIPT.format(layers=args.layers,
                                                                 tokens=args.tokens)])
        try:
            result = json.loads(api["stdout"].strip().splitlines()[-1])
            print(row("archlint.lint (API)", api, figures(result["tracer"], result,
                                                          result["coverage"])))
        except (ValueError, KeyError, IndexError):
            print(f"| archlint.lint (API) | failed (exit {api['rc']}): {api['stderr'][-300:]} |")


def row(label: str, m: dict, rest: str) -> str:
    return (f"| {label} | {m['seconds']:.1f} | {m['cpu']:.1f} | {m['peak_mb']:.0f} MB "
            f"| {m['pss_mb']:.0f} MB {rest}")


def figures(tracer: str, summary: dict, coverage: float) -> str:
    return f"| {tracer} | {summary['params']:,} | {summary['macs'] / 1e9:.2f} | {coverage:.0%} |"

if __name__ == "__main__":
    main()
