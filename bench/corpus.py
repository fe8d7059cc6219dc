"""Lint the model zoos people actually use, one model per fresh process, and tabulate the result.

    python bench/corpus.py                              # every source
    python bench/corpus.py --source timm --limit 100    # a partial run
    python bench/corpus.py --report                     # rebuild docs/corpus.md from the JSON

Sources: every torchvision builder (weights=None), every timm model (pretrained=False, at its
pretrained_cfg input size), Ultralytics YOLO built from yaml, segmentation_models_pytorch with
encoder_weights=None, and the example VAE and GAN generator in examples/.

Importing torch, timm and torchvision takes seconds, so a fork server does it once: this
process imports everything, and each model is linted in a child forked from it, so every model
still starts from a clean process and cannot leak state into the next. A child that runs past
`--timeout` is killed. The child measures its own peak RSS; a forked child starts with the
parent's resident pages, so the RSS it had at fork is reported too, and the growth (peak minus
start) is what the model cost.

Results are appended, one JSON object per model, to bench/results/corpus-<source>.jsonl as they
finish (a run can be interrupted and resumed with --resume); --report turns them into
docs/corpus.md and bench/results/corpus.json.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import multiprocessing as mp
import os
import random
import resource
import sys
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SOURCES = ("torchvision", "timm", "yolo", "smp", "examples")

# Input shapes for torchvision builders that do not take 1x3x224x224.
_TV_VIDEO_SMALL = {"r3d_18", "mc3_18", "r2plus1d_18"}
_TV_INPUTS = {"inception_v3": [(1, 3, 299, 299)], "quantized_inception_v3": [(1, 3, 299, 299)]}


# --- the corpus ----------------------------------------------------------------------------------

def torchvision_entries() -> list[dict[str, Any]]:
    import torchvision.models as M

    groups = [("detection", M.detection), ("segmentation", M.segmentation), ("video", M.video),
              ("optical_flow", M.optical_flow), ("quantizable", M.quantization)]
    special = {}
    for group, module in groups:
        for name in M.list_models(module=module):
            special[name] = group
    entries = []
    for name in M.list_models():
        group = special.get(name, "classification")
        if name in _TV_INPUTS:
            shapes = _TV_INPUTS[name]
        elif group == "video":
            side = 112 if name in _TV_VIDEO_SMALL else 224
            shapes = [(1, 3, 16, side, side)]
        elif group == "optical_flow":
            shapes = [(1, 3, 224, 224), (1, 3, 224, 224)]
        elif group == "detection":
            shapes = [(1, 3, 320, 320)] if "320" in name else [(1, 3, 512, 512)]
        elif group == "segmentation":
            shapes = [(1, 3, 520, 520)]
        else:
            shapes = [(1, 3, 224, 224)]
        entries.append({"source": "torchvision", "group": group, "model": name, "shapes": shapes})
    return entries


def timm_entries() -> list[dict[str, Any]]:
    import timm

    return [{"source": "timm", "group": "timm", "model": name, "shapes": None}
            for name in timm.list_models()]


def yolo_entries() -> list[dict[str, Any]]:
    return [{"source": "yolo", "group": "detection", "model": name, "shapes": [(1, 3, 640, 640)]}
            for name in ("yolov8n", "yolo11n")]


SMP_ARCHS = ("Unet", "FPN", "DeepLabV3Plus")


def smp_entries() -> list[dict[str, Any]]:
    return [{"source": "smp", "group": "segmentation", "model": f"{arch}-resnet34",
             "shapes": [(1, 3, 256, 256)]} for arch in SMP_ARCHS]


EXAMPLES = {"conv_vae": "examples/conv_vae.py", "dcgan_generator": "examples/dcgan_generator.py"}


def example_entries() -> list[dict[str, Any]]:
    return [{"source": "examples", "group": "generative", "model": name, "shapes": None}
            for name in EXAMPLES]


ENTRIES: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "torchvision": torchvision_entries, "timm": timm_entries, "yolo": yolo_entries,
    "smp": smp_entries, "examples": example_entries,
}


def build(entry: dict[str, Any]):
    """The model, with its parameters on the meta device (no weight memory), and example
    inputs (meta tensors) or None to let archlint pick them as it does for a user."""
    from archlint import inputs as archlint_inputs, load

    source, name = entry["source"], entry["model"]
    shapes = entry.get("shapes")
    try:
        model, inputs = _build(entry, on_meta=True)
        entry["weights"] = "meta"
    except Exception:  # a constructor that computes with its weights: build them for real, as load does
        model, inputs = _build(entry, on_meta=False)
        entry["weights"] = "real"
    if inputs is None and shapes:
        inputs = archlint_inputs.ExampleInputs(archlint_inputs.from_shapes(shapes), "corpus")
    return model, inputs


def _build(entry: dict[str, Any], on_meta: bool):
    from archlint import inputs as archlint_inputs, load

    source, name = entry["source"], entry["model"]
    inputs = None
    with load.building(on_meta):
        if source == "torchvision":
            import torchvision.models as M

            kwargs: dict[str, Any] = {"weights": None}
            if entry["group"] in ("detection", "segmentation"):
                kwargs["weights_backbone"] = None
            if entry["group"] == "quantizable":
                kwargs["quantize"] = False
            model = M.get_model(name, **kwargs)
        elif source == "timm":
            import timm

            model = timm.create_model(name, pretrained=False)
        elif source == "yolo":
            from ultralytics.nn.tasks import DetectionModel

            model = DetectionModel(f"{name}.yaml", verbose=False)
        elif source == "smp":
            import segmentation_models_pytorch as smp

            arch, encoder = name.split("-", 1)
            model = getattr(smp, arch)(encoder_name=encoder, encoder_weights=None, classes=2)
        elif source == "examples":
            module = load.import_file(ROOT / EXAMPLES[name])
            model = module.model
            inputs = archlint_inputs.for_target(model, module)
        else:
            raise ValueError(f"unknown source {source}")
    return model, inputs


# --- one model, in a child -------------------------------------------------------------------

def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def lint_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """Build and lint one model the way a user would (archlint.api), and describe the result."""
    from archlint import api
    from archlint.errors import ArchlintError

    row: dict[str, Any] = {"source": entry["source"], "group": entry["group"], "model": entry["model"]}
    started = time.perf_counter()
    try:
        model, inputs = build(entry)
    except Exception as exc:  # the zoo's own constructor failed: not archlint's doing
        row.update(status="build-failed", error=f"{type(exc).__name__}: {str(exc)[:300]}")
        return row
    row["build_s"] = round(time.perf_counter() - started, 2)
    row["weights"] = entry.get("weights")  # "real": the constructor would not build on meta
    started = time.perf_counter()
    try:
        # The public API, as a user calls it: the model's own default input unless the zoo's
        # documented one differs.
        report = api.lint(model) if inputs is None else api.lint(model, example_input=inputs.tensors)
    except ArchlintError as exc:
        row.update(status="error", error_kind=exc.kind, error=str(exc))
    except Exception as exc:
        row.update(status="crash", error=f"{type(exc).__name__}: {exc}"[:500],
                   traceback=traceback.format_exc()[-3000:])
    else:
        counts = report.counts()
        row.update(
            status="parts" if getattr(report, "parts", None) else "linted",
            tracer=report.tracer, inputs=report.inputs, input_source=report.input_source,
            layers=report.summary["layers"], params=report.summary["params"], macs=report.summary["macs"],
            errors=counts["error"], warnings=counts["warning"], infos=counts["info"],
            rules=dict(Counter(f"{f.code}:{f.severity}" for f in report.findings)),
            rule_crashes=[n for n in report.notes if " failed on this model and was skipped" in n],
            notes=report.notes, timings={k: round(v, 2) for k, v in report.timings.items()},
            coverage=report.coverage,
        )
        if getattr(report, "parts", None):
            row["parts"] = report.parts
    row["lint_s"] = round(time.perf_counter() - started, 2)
    return row


def _child(entry: dict[str, Any], conn) -> None:
    os.nice(0)
    start_rss = _rss_kb()
    try:
        row = lint_entry(entry)
    except BaseException as exc:  # report anything rather than die silently
        row = {"source": entry["source"], "group": entry["group"], "model": entry["model"],
               "status": "crash", "error": f"{type(exc).__name__}: {exc}"[:500],
               "traceback": traceback.format_exc()[-3000:]}
    row["rss_start_mb"] = round(start_rss / 1024, 1)
    row["rss_peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    row["rss_growth_mb"] = round(row["rss_peak_mb"] - row["rss_start_mb"], 1)
    conn.send(row)
    conn.close()


def run_one(entry: dict[str, Any], timeout: float) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    started = time.perf_counter()
    process = ctx.Process(target=_child, args=(entry, send), daemon=True)
    process.start()
    send.close()
    row = None
    if receive.poll(timeout):
        try:
            row = receive.recv()
        except EOFError:
            row = None
    elapsed = time.perf_counter() - started
    if process.is_alive():
        process.join(5)
    if process.is_alive():
        process.kill()
        process.join()
    if row is None:
        base = {"source": entry["source"], "group": entry["group"], "model": entry["model"]}
        if elapsed >= timeout:
            row = {**base, "status": "timeout", "error": f"no result within {timeout:.0f} s; killed"}
        else:
            row = {**base, "status": "died", "error": f"the child process exited with {process.exitcode}"}
    row["time_s"] = round(elapsed, 2)
    return row


# --- the run --------------------------------------------------------------------------------------

def _import_everything(sources: list[str]) -> dict[str, str]:
    import torch
    import torchvision

    import archlint
    import archlint.api  # noqa: F401
    from archlint.registry import load_rules

    torch.set_num_threads(1)
    load_rules()  # rule modules are imported once, in the parent
    versions = {"python": sys.version.split()[0], "torch": torch.__version__,
                "torchvision": torchvision.__version__, "archlint": archlint.__version__}
    import timm

    versions["timm"] = timm.__version__
    if "yolo" in sources:
        import ultralytics
        from ultralytics.nn.tasks import DetectionModel  # noqa: F401

        versions["ultralytics"] = ultralytics.__version__
    if "smp" in sources:
        import segmentation_models_pytorch as smp

        versions["segmentation_models_pytorch"] = smp.__version__
    return versions


def run(sources: list[str], limit: int | None, timeout: float, resume: bool, only: list[str],
        offset: int = 0, shuffle: int | None = None) -> None:
    versions = _import_everything(sources)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for source in sources:
        entries = ENTRIES[source]()
        if only:
            entries = [e for e in entries if e["model"] in only]
        if shuffle is not None:
            # A partial run of a big source is then a fair sample of it, not its first families.
            random.Random(shuffle).shuffle(entries)
        entries = entries[offset:]
        if limit is not None:
            entries = entries[:limit]
        out = RESULTS / f"corpus-{source}.jsonl"
        done = set()
        if resume and out.exists():
            done = {json.loads(line)["model"] for line in out.read_text().splitlines() if line.strip()}
        elif out.exists() and not only:
            out.unlink()
        meta = RESULTS / f"corpus-{source}.meta.json"
        meta.write_text(json.dumps({"started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                                    "versions": versions, "timeout_s": timeout,
                                    "planned": len(entries), "shuffle_seed": shuffle}, indent=1))
        for i, entry in enumerate(entries, 1):
            if entry["model"] in done:
                continue
            row = run_one(entry, timeout)
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"[{source} {i}/{len(entries)}] {entry['model']}: {row['status']} "
                  f"{row.get('time_s', 0):.1f}s {row.get('rss_peak_mb', '?')}MB "
                  f"{(row.get('error') or '')[:120]}", flush=True)


def retry_failed(sources: list[str], timeout: float, only: list[str] = (), groups: list[str] = (),
                 stale: bool = False) -> None:
    """After a fix: run the failures (or the named models or groups) again and put the new rows
    in place of the old ones."""
    _import_everything(sources)
    for source in sources:
        out = RESULTS / f"corpus-{source}.jsonl"
        if not out.exists():
            continue
        rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
        entries = {e["model"]: e for e in ENTRIES[source]()}
        for i, row in enumerate(rows):
            named = row["model"] in only or row["group"] in groups or (stale and row.get("weights") != "meta")
            if row["model"] not in entries or (row["status"] in ("linted", "parts") and not named):
                continue
            if (only or groups or stale) and not named:
                continue
            rows[i] = run_one(entries[row["model"]], timeout)
            print(f"[retry {source}] {row['model']}: {row['status']} -> {rows[i]['status']} "
                  f"{(rows[i].get('error') or '')[:120]}", flush=True)
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))


# --- the table ------------------------------------------------------------------------------------

def _load_rows() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows, metas = [], {}
    for source in SOURCES:
        path = RESULTS / f"corpus-{source}.jsonl"
        if path.exists():
            rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        meta_path = RESULTS / f"corpus-{source}.meta.json"
        if meta_path.exists():
            metas[source] = json.loads(meta_path.read_text())
    return rows, metas


def _cell(text: Any, width: int = 160) -> str:
    text = " ".join(str(text or "").split())
    text = text if len(text) <= width else text[: width - 1] + "…"
    return text.replace("|", "\\|")


def _rate(members: list[dict[str, Any]]) -> str:
    whole = sum(r["status"] == "linted" for r in members)
    parts = sum(r["status"] == "parts" for r in members)
    text = f"{whole}/{len(members)} linted whole ({100 * whole / len(members):.1f}%)"
    return text + (f", {parts} in parts" if parts else "")


def render_markdown(rows: list[dict[str, Any]], metas: dict[str, Any], extra: str = "") -> str:
    by_source: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    versions = {}
    for meta in metas.values():
        versions.update(meta.get("versions", {}))
    lines = [
        "# archlint on the model zoos",
        "",
        f"Generated {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC by `python bench/corpus.py`"
        " (fork server: one fresh child process per model, killed at the time limit).",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) + ".",
        "",
        "Statuses: **linted**: traced whole and every rule ran. **parts**: the whole model could "
        "not be traced (dynamic post-processing), archlint said so and linted its traceable "
        "parts. **error**: archlint stopped with a one-paragraph reason (exit status 2). "
        "**crash** (a Python traceback), **timeout** and **died** are archlint bugs; "
        "**build-failed** means the zoo's own constructor failed outside archlint.",
        "",
        "## Totals",
        "",
        "| source | group | models | linted | parts | error | crash | timeout/died | build-failed | median time (s) | max RSS growth (MB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    total = Counter()
    for source in SOURCES:
        groups: dict[str, list[dict[str, Any]]] = {}
        for row in by_source.get(source, []):
            groups.setdefault(row["group"], []).append(row)
        for group, members in groups.items():
            c = Counter(r["status"] for r in members)
            times = sorted(r.get("time_s", 0) for r in members)
            growth = max((r.get("rss_growth_mb", 0) for r in members), default=0)
            lines.append(
                f"| {source} | {group} | {len(members)} | {c['linted']} | {c['parts']} | {c['error']} | "
                f"{c['crash']} | {c['timeout'] + c['died']} | {c['build-failed']} | "
                f"{times[len(times) // 2]:.1f} | {growth:.0f} |")
            total.update(c)
            total["models"] += len(members)
    real = [f"{r['source']}/{r['model']}" for r in rows if r.get("weights") == "real"]
    lines.append(
        f"| **all** | | {total['models']} | {total['linted']} | {total['parts']} | {total['error']} | "
        f"{total['crash']} | {total['timeout'] + total['died']} | {total['build-failed']} | | |")
    for source, meta in metas.items():
        planned, got = meta.get("planned"), len(by_source.get(source, []))
        if planned and got < planned:
            lines += ["", f"**Partial run**: {source} has results for {got} of {planned} planned models "
                          "(the run did not finish in the time available)."]
    lines += ["", "Success rates: " + "; ".join(
        f"{source} {_rate(members)}" for source, members in by_source.items()) + "."]
    classification = [r for r in by_source.get("torchvision", []) if r["group"] == "classification"]
    if classification:
        lines[-1] += f" torchvision classification: {_rate(classification)}."
    lines += ["", f"Built with real weights because the constructor would not run with meta "
                  f"parameters: {len(real)} ({', '.join(real) or 'none'})."]
    lines += ["", extra] if extra else []

    # Rules: how often each fires per source, to catch rules that fire on most healthy models.
    lines += ["", "## Rule firing counts", "",
              "Models on which each rule fired at least once, by severity (of the models linted whole "
              "or in parts). A warning-level rule that fires on more than half of timm is suspect.", "",
              "| rule:severity | " + " | ".join(SOURCES) + " |", "|---|" + "---:|" * len(SOURCES)]
    ok = {s: [r for r in by_source.get(s, []) if r["status"] in ("linted", "parts")] for s in SOURCES}
    fired: dict[str, Counter] = {}
    for source, members in ok.items():
        for row in members:
            for key in row.get("rules", {}):
                fired.setdefault(key, Counter())[source] += 1
    for key in sorted(fired):
        cells = []
        for source in SOURCES:
            n, of = fired[key][source], len(ok[source])
            cells.append(f"{n}/{of} ({100 * n / of:.0f}%)" if of and n else "")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")

    def coverage_cell(r: dict[str, Any]) -> str:
        c = r.get("coverage")
        if not c:
            return ""
        share = 100 * c["params_reached"] / c["params_total"] if c["params_total"] else 100.0
        return "100%" if c["params_reached"] == c["params_total"] else f"{min(share, 99.9):.1f}%"

    with_coverage = [r for r in rows if r.get("coverage")]
    partial = [r for r in with_coverage if r["coverage"]["params_reached"] < r["coverage"]["params_total"]]
    lines += ["", "## Coverage", "",
              f"Share of each model's parameters the linted graph reached: {len(with_coverage) - len(partial)} "
              f"of {len(with_coverage)} models with a coverage figure at 100%"
              + (f"; rows from runs before coverage was recorded have none ({len(rows) - len(with_coverage)})."
                 if len(with_coverage) < len(rows) else "."), ""]
    if partial:
        lines += ["Every model under 100%, with what was not reached and why:", "",
                  "| source | model | tracer | coverage | not reached |", "|---|---|---|---:|---|"]
        for r in partial:
            missing = "; ".join(f"{u['module'] or 'the model'} ({u['params']:,}): {u['why']}"
                                for u in r["coverage"]["unreached"][:6])
            lines.append(f"| {r['source']} | {r['model']} | {r.get('tracer') or ''} | {coverage_cell(r)} | "
                         f"{_cell(missing, 400)} |")

    problems = [r for r in rows if r["status"] not in ("linted",)]
    lines += ["", "## Models not linted whole", "",
              "| source | model | status | tracer | layers | time (s) | reason |", "|---|---|---|---|---:|---:|---|"]
    for r in problems:
        reason = r.get("error") or "; ".join(r.get("notes", []))
        if r.get("parts"):
            linted = [p["module"] for p in r["parts"] if "skipped" not in p]
            skipped = [p["module"] for p in r["parts"] if "skipped" in p]
            cause = r["notes"][0].split(". archlint ran it")[0].replace("The whole model could not be traced: ", "")
            reason = f"linted: {', '.join(linted)}; skipped: {', '.join(skipped) or 'none'}. Whole-model trace: {cause}"
        lines.append(f"| {r['source']} | {r['model']} | {r['status']} | {r.get('tracer') or ''} | "
                     f"{r.get('layers', '')} | {r.get('time_s', 0):.1f} | {_cell(reason, 400)} |")

    lines += ["", "## Every model", "", "Full rows (with notes, rule counts and timings): "
              "[bench/results/corpus.json](../bench/results/corpus.json).", "",
              "| source | model | status | tracer | layers | coverage | E | W | I | time (s) | peak RSS (MB) | RSS growth (MB) |",
              "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['source']} | {r['model']} | {r['status']} | {r.get('tracer') or ''} | {r.get('layers', '')} | "
            f"{coverage_cell(r)} | "
            f"{r.get('errors', '')} | {r.get('warnings', '')} | {r.get('infos', '')} | {r.get('time_s', 0):.1f} | "
            f"{r.get('rss_peak_mb', '')} | {r.get('rss_growth_mb', '')} |")
    return "\n".join(lines) + "\n"


def report(extra_path: str | None) -> None:
    rows, metas = _load_rows()
    (RESULTS / "corpus.json").write_text(json.dumps({"meta": metas, "models": rows}, indent=1))
    extra = Path(extra_path).read_text() if extra_path else ""
    fresh = RESULTS / "fresh-rss.md"
    if "FRESH_RSS_TABLE" in extra:
        extra = extra.replace("FRESH_RSS_TABLE", fresh.read_text().strip() if fresh.exists()
                              else "(not measured: run with --fresh-rss)")
    (ROOT / "docs" / "corpus.md").write_text(render_markdown(rows, metas, extra))
    print(f"wrote docs/corpus.md and bench/results/corpus.json ({len(rows)} models)")


# --- peak memory in a truly fresh process ---------------------------------------------------------

def fresh_rss(models: list[str]) -> str:
    """Lint each timm model with `archlint check` in a new interpreter under /usr/bin/time -v,
    as a user would, and return a markdown table of peak RSS against the weights' real size.
    The baseline row is the same interpreter importing torch and timm and doing nothing else."""
    import subprocess
    import tempfile

    import timm

    rows = ["| model | parameters | fp32 weights (GB) | peak RSS of `archlint check` (MB) | exit | wall (s) |",
            "|---|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as folder:
        def measure(args: list[str]) -> tuple[int, int, float]:
            started = time.perf_counter()
            done = subprocess.run(["/usr/bin/time", "-v", *args], cwd=folder, capture_output=True, text=True,
                                  env=dict(os.environ, NO_COLOR="1"))
            peak = next((int(line.split(":")[1]) for line in done.stderr.splitlines()
                         if "Maximum resident set size" in line), 0)
            return peak, done.returncode, time.perf_counter() - started

        peak, code, wall = measure([sys.executable, "-c", "import torch, timm"])
        rows.append(f"| (baseline: `import torch, timm`) | | | {peak / 1024:.0f} | {code} | {wall:.1f} |")
        for name in models:
            path = Path(folder) / f"{name}.py"
            path.write_text(f"import timm\n\nmodel = timm.create_model({name!r}, pretrained=False)\n")
            peak, code, wall = measure([sys.executable, "-m", "archlint", "check", "--no-cache",
                                        "--exit-zero", str(path)])
            with torch_meta():
                params = sum(p.numel() for p in timm.create_model(name, pretrained=False).parameters())
            rows.append(f"| {name} | {params / 1e9:.2f}B | {params * 4 / 1e9:.1f} | {peak / 1024:.0f} | {code} | {wall:.1f} |")
    return "\n".join(rows) + "\n"


def torch_meta():
    from archlint import load

    return load.building(on_meta=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", action="append", choices=SOURCES,
                        help="source to run (repeatable; default: all)")
    parser.add_argument("--limit", type=int, help="at most this many models per source")
    parser.add_argument("--offset", type=int, default=0, help="skip this many models per source first")
    parser.add_argument("--model", action="append", default=[], help="only these model names")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per model before it is killed")
    parser.add_argument("--shuffle", type=int, metavar="SEED",
                        help="run each source's models in a random order (so --limit is a fair sample)")
    parser.add_argument("--resume", action="store_true", help="skip models already in the results file")
    parser.add_argument("--report", action="store_true", help="only rebuild docs/corpus.md from the results")
    parser.add_argument("--extra", help="markdown file appended after the totals (measurements made elsewhere)")
    parser.add_argument("--fresh-rss", nargs="+", metavar="MODEL",
                        help="measure `archlint check` peak RSS for these timm models in fresh processes")
    parser.add_argument("--retry-failed", action="store_true",
                        help="run again the models whose last result is not linted or parts (or those "
                             "named by --model/--group), replacing their rows")
    parser.add_argument("--group", action="append", default=[], help="with --retry-failed: these groups")
    parser.add_argument("--stale", action="store_true",
                        help="with --retry-failed: rows not built on meta (older runs, or real-weight builds)")
    args = parser.parse_args(argv)
    if args.fresh_rss:
        table = fresh_rss(args.fresh_rss)
        (RESULTS / "fresh-rss.md").write_text(table)
        print(table)
        return
    if args.retry_failed:
        retry_failed(args.source or list(SOURCES), args.timeout, args.model, args.group, args.stale)
        return
    if args.report:
        report(args.extra)
        return
    run(args.source or list(SOURCES), args.limit, args.timeout, args.resume, args.model, args.offset,
        args.shuffle)


if __name__ == "__main__":
    main()
