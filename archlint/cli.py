"""The command line: `archlint check`, `archlint report`, `archlint summary`, `archlint diff`,
`archlint rules`, `archlint explain`, `archlint worker status|stop`."""
from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import click

from . import __version__
from .errors import ArchlintError, ConfigError
from .findings import Severity
from .reports import FORMATS


def _use_color(stream) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return hasattr(stream, "isatty") and stream.isatty()


def _fail(message: str, debug: bool = False) -> None:
    if debug:
        traceback.print_exc()
    click.echo(f"archlint: error: {message}", err=True)
    sys.exit(2)


class _Main(click.Group):
    def parse_args(self, ctx, args):
        # The command line as given: a run handed to the warm worker is this argv, run again there.
        ctx.meta["archlint.argv"] = list(args)
        return super().parse_args(ctx, args)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="archlint")
def main() -> None:
    """A design linter for PyTorch architectures.

    `check` and `report` hand their run to a warm worker that has torch imported already
    (started on demand, exits after 15 idle minutes; `archlint worker --help`).
    """


def _settings(first_spec: str, config_path, select, ignore, fail_on, batch_size, input_shapes):
    """[tool.archlint] from --config or the pyproject.toml nearest the first path, then flags."""
    from .config import load_config_file, load_settings, parse_shape
    from .prefilter import split_spec

    if config_path:
        settings = load_config_file(os.path.abspath(config_path))
    else:
        first = Path(split_spec(first_spec)[0])
        settings = load_settings(first if first.exists() else Path.cwd())
    settings = settings.with_overrides(
        select=[c.strip().upper() for c in select.split(",") if c.strip()] if select else None,
        ignore=[c.strip().upper() for c in ignore.split(",") if c.strip()] if ignore else None,
        fail_on=Severity.parse(fail_on) if fail_on else None,
        batch_size=batch_size,
        cli_input_shapes=[parse_shape(s) for s in input_shapes] if input_shapes else None,
    )
    if batch_size is not None and batch_size < 1:
        raise ConfigError("--batch-size must be a positive integer.")
    return settings


def lint_options(command):
    """The options every command that lints takes (`check` and `report`)."""
    options = [
        click.option("--input-shape", "input_shapes", multiple=True,
                     help="Example input shape, e.g. 1,3,224,224; repeat for several inputs."),
        click.option("--batch-size", type=int, help="Per-device training batch size (N001 uses it)."),
        click.option("--select", help="Comma-separated rule codes or prefixes to run (ALL for every rule)."),
        click.option("--ignore", help="Comma-separated rule codes or prefixes to skip."),
        click.option("--fail-on", type=click.Choice(["info", "warning", "error"]),
                     help="Lowest severity that makes the exit status 1 (default: warning)."),
        click.option("--exit-zero", is_flag=True, help="Exit 0 even when findings are reported."),
        click.option("--config", "config_path", type=click.Path(dir_okay=False),
                     help="Read [tool.archlint] from this pyproject.toml instead of the nearest one."),
        click.option("--debug", is_flag=True, help="Show Python tracebacks for errors."),
        click.option("--no-worker", is_flag=True,
                     help="Run in this process: neither start nor use the warm worker (also `worker = "
                          "false` in the config or ARCHLINT_NO_WORKER=1; off by default when CI is set)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command()
@click.argument("paths", nargs=-1, required=True)
@lint_options
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="text", show_default=True)
@click.option("-o", "--output", help="Write the report to FILE.")
@click.option("--statistics", is_flag=True, help="Count findings per rule at the end.")
@click.option("-q", "--quiet", is_flag=True, help="Only the findings and the summary line.")
@click.option("--baseline", "baseline_path", type=click.Path(dir_okay=False),
              help="Report only findings not accepted in this baseline file.")
@click.option("--write-baseline", is_flag=True,
              help="Accept every current finding: write them to the --baseline file "
                   "(default archlint-baseline.json) and exit 0.")
@click.option("--no-cache", is_flag=True, help="Lint every file again; do not read or write .archlint_cache/.")
@click.option("--skip-no-model", is_flag=True,
              help="Skip files that build no model instead of reporting them (for pre-commit, "
                   "which passes every changed .py file).")
def check(paths, input_shapes, batch_size, select, ignore, fail_on, fmt, output, exit_zero,
          statistics, quiet, config_path, debug, baseline_path, write_baseline, no_cache, skip_no_model,
          no_worker):
    """Lint the models that PATHS build (file.py, file.py::Name, or a folder)."""
    from . import driver, safe_io
    from .reports import render
    from .worker import client as worker

    try:
        # Every path is made absolute before any user code runs: a file may chdir at import.
        output = os.path.abspath(output) if output else None
        if baseline_path or write_baseline:
            from .baseline import DEFAULT_PATH
            baseline_path = os.path.abspath(baseline_path or DEFAULT_PATH)
        if output:
            safe_io.check_target(output, paths, what="report")
        if write_baseline:
            safe_io.check_target(baseline_path, paths, what="baseline")
            if os.path.exists(baseline_path):
                from .baseline import Baseline
                Baseline.read(baseline_path)  # merged into later: refuse what is not a baseline now
        settings = _settings(paths[0], config_path, select, ignore, fail_on, batch_size, input_shapes)
        # The HTML report draws each model's layers, which the cache does not keep. At the
        # first file that must be linted, the hook hands the whole run to the warm worker
        # (raising worker.Served with its exit status) unless there is none to be had.
        report = driver.check_paths(list(paths), settings, use_cache=not no_cache and fmt != "html",
                                    skip_no_model=skip_no_model,
                                    before_first_lint=worker.first_lint_hook(_worker_run(no_worker, settings, paths)))
        if write_baseline:
            _write_baseline(report, baseline_path, paths, debug)
            return
        if baseline_path:
            _apply_baseline(report, baseline_path, quiet)
        if fmt in ("sarif", "html") and not report.rules:
            from .registry import load_rules  # documented in the output; a cached run has not loaded them

            report.rules = list(load_rules().rules)
        text = render(fmt, report, color=(fmt == "text" and not output and _use_color(sys.stdout)),
                      statistics=statistics, quiet=quiet)
        if debug:
            _show_debug(report)
        if output:
            safe_io.write_text(output, text, paths, what="report")
        else:
            sys.stdout.write(text)
    except ArchlintError as exc:
        _fail(str(exc), debug)
        return
    except Exception as exc:  # a bug in archlint: one paragraph, the traceback with --debug
        _internal(exc, debug)
        return
    if output and not quiet:
        click.echo(f"archlint: wrote {output}", err=True)
    code = report.exit_code(settings.fail_on)
    sys.exit(0 if exit_zero and code == 1 else code)


def _worker_run(no_worker: bool, settings, paths):
    """This command line as a run for the warm worker, or None when it must run here."""
    from .worker import client

    if not client.wanted(no_worker, settings):
        return None
    ctx = click.get_current_context()
    argv = ctx.meta.get("archlint.argv")
    if argv is None:  # called from Python, not from a command line
        return None
    return client.Run(argv, ctx.find_root().info_name, list(paths), settings.worker_idle)


def _internal(exc: BaseException, debug: bool) -> None:
    from .errors import first_line

    _fail(f"internal error: {first_line(exc)}. This is a bug in archlint; run with --debug for "
          "the traceback and report it.", debug)


def _show_debug(report) -> None:
    """Tracebacks of the targets that failed, and what the user's code printed."""
    for model in report.models:
        if model.error is not None:
            details = getattr(model.error, "details", "")
            if details:
                click.echo(details.rstrip("\n"), err=True)
            else:
                traceback.print_exception(model.error)
        if getattr(model, "output", ""):
            click.echo(f"archlint: output of {model.target}:", err=True)
            click.echo(model.output.rstrip("\n"), err=True)


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("-o", "--output", default="archlint-report.html", show_default=True,
              help="Write the page to FILE.")
@lint_options
@click.pass_context
def report(ctx, paths, output, **options):
    """Write the HTML report for PATHS and print its path (`check --format html -o FILE`)."""
    from .worker.client import Served

    before = os.stat(output).st_mtime_ns if os.path.exists(output) else None
    try:
        ctx.invoke(check, paths=paths, fmt="html", output=output, quiet=True, **options)
        code = 0
    except Served:
        raise  # the worker ran this whole command, path line included
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    # `check` exits before writing when the run itself failed (bad config, no such file).
    if os.path.exists(output) and os.stat(output).st_mtime_ns != before:
        click.echo(os.path.abspath(output))
    sys.exit(code)


def _write_baseline(report, path: str, inputs, debug: bool) -> None:
    from . import baseline

    change = baseline.update(report, path, inputs)
    shown = os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path

    def n(count: int, word: str = "finding") -> str:
        return f"{count} {word}{'' if count == 1 else 's'}"

    click.echo(f"archlint: wrote {shown}: {n(change.accepted)} accepted "
               f"({change.added} new, {change.removed} no longer found"
               + (f"; {n(change.kept, 'entry')} of targets not linted kept" if change.kept else "")
               + ")", err=True)
    if debug:
        _show_debug(report)
    for model in report.errors:
        click.echo(f"archlint: error: {model.target}: {model.error}", err=True)
    sys.exit(2 if report.errors else 0)


def _apply_baseline(report, path: str, quiet: bool) -> None:
    from . import baseline

    result = baseline.Baseline.read(path).filter(report)
    if quiet:
        return
    if result.hidden:
        click.echo(f"archlint: {result.hidden} finding{'' if result.hidden == 1 else 's'} "
                   f"accepted in {path} not shown", err=True)
    if result.stale:
        click.echo(f"archlint: {result.stale} accepted finding{'' if result.stale == 1 else 's'} "
                   f"in {path} no longer occur; shrink it with --write-baseline", err=True)


@main.command()
@click.argument("old")
@click.argument("new")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "html"]), default="text", show_default=True)
@click.option("-o", "--output", help="Write the diff to FILE.")
@click.option("--input-shape", "input_shapes", multiple=True,
              help="Example input shape for both versions, e.g. 1,3,224,224.")
@click.option("--batch-size", type=int, help="Per-device training batch size (N001 uses it).")
@click.option("--select", help="Comma-separated rule codes or prefixes to run (ALL for every rule).")
@click.option("--ignore", help="Comma-separated rule codes or prefixes to skip.")
@click.option("--fail-on", type=click.Choice(["info", "warning", "error"]),
              help="Lowest severity of an introduced finding that makes the exit status 1 (default: warning).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Read [tool.archlint] from this pyproject.toml instead of the nearest one.")
@click.option("--debug", is_flag=True, help="Show Python tracebacks for errors.")
def diff(old, new, fmt, output, input_shapes, batch_size, select, ignore, fail_on, config_path, debug):
    """Compare two versions of a model: layers, params, MACs, receptive field, findings.

    OLD and NEW are files (file.py or file.py::Name) or git:REV:path for a file at a git
    revision, e.g. `archlint diff git:HEAD~1:models/net.py models/net.py`. Exits 1 when a
    finding at or above --fail-on is introduced.
    """
    from . import diff as model_diff
    from . import safe_io

    try:
        inputs = [p for p in (old, new) if not p.startswith(model_diff.GIT_PREFIX)]
        output = os.path.abspath(output) if output else None
        if output:
            safe_io.check_target(output, inputs, what="diff")
        first = new if not new.startswith(model_diff.GIT_PREFIX) else old
        settings = _settings(first if not first.startswith(model_diff.GIT_PREFIX) else ".",
                             config_path, select, ignore, fail_on, batch_size, input_shapes)
        text, result = model_diff.run(old, new, settings, fmt)
        if output:
            safe_io.write_text(output, text, inputs, what="diff")
    except ArchlintError as exc:
        _fail(str(exc), debug)
        return
    except Exception as exc:
        _internal(exc, debug)
        return
    if output:
        click.echo(f"archlint: wrote {output}", err=True)
    else:
        click.echo(text, nl=False)
    sys.exit(result.exit_code(settings.fail_on))


@main.command(name="summary")
@click.argument("paths", nargs=-1, required=True)
@click.option("--depth", type=int, default=3, show_default=True,
              help="Fold modules nested deeper than this into their parents (torchinfo's depth).")
@click.option("--batch-size", type=int,
              help="Batch size for the training memory (default: the example input's batch).")
@click.option("--optimizer", type=click.Choice(["adam", "adamw", "sgd-momentum", "sgd"]),
              default="adam", show_default=True, help="Optimizer whose state the training memory counts.")
@click.option("--no-memory", is_flag=True, help="Skip the training-memory measurement.")
@click.option("--input-shape", "input_shapes", multiple=True,
              help="Example input shape, e.g. 1,3,224,224; repeat for several inputs.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write the table to FILE.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Read [tool.archlint] from this pyproject.toml instead of the nearest one.")
@click.option("--debug", is_flag=True, help="Show Python tracebacks for errors.")
def summary(paths, depth, batch_size, optimizer, no_memory, input_shapes, fmt, output, config_path, debug):
    """The layer table of the models PATHS build: output shapes, parameters, MACs, receptive
    field, activations saved for backward, and training memory at --batch-size."""
    import shutil

    from . import summary as summaries
    from .api import check_paths
    from .reports import summary_json, summary_text

    try:
        settings = _settings(paths[0], config_path, None, None, None, batch_size, input_shapes)
        # In this process: the table reads the live modules (trainable or frozen parameters)
        # and the memory measurement runs the model's forward again.
        report = check_paths(list(paths), settings, isolate=False)
    except ArchlintError as exc:
        _fail(str(exc), debug)
        return
    records, errors, skipped = [], [], []
    for model in report.models:
        if model.error is not None:
            errors.append((model.target, str(model.error)))
        elif model.skipped is not None:  # a script not imported, a model not built
            skipped.append((model.target, model.skip_note))
        elif model.graph is None:  # linted part by part (archlint/partial.py): no whole graph
            errors.append((model.target, "no layer table: the model could not be traced whole, "
                           "so its parts were linted alone; name one part for its table "
                           "(file.py::model.backbone)"))
        else:
            records.append(summaries.summarize(model.graph, model.target, settings.batch_size,
                                               optimizer, memory=not no_memory))
    to_terminal = fmt == "text" and not output and _use_color(sys.stdout)
    if fmt == "json":
        text = summary_json.render(records, depth=depth, errors=errors, skipped=skipped)
    else:
        width = shutil.get_terminal_size().columns if not output and sys.stdout.isatty() else None
        text = summary_text.render(records, depth=depth, color=to_terminal, width=width, errors=errors,
                                   skipped=skipped)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"archlint: wrote {output}", err=True)
    else:
        click.echo(text, nl=False, color=to_terminal)  # click strips colour unless told
    sys.exit(2 if errors else 0)


@main.command(name="rules")
def list_rules() -> None:
    """List every rule: code, name, default severity, one line."""
    from .registry import load_rules

    loaded = load_rules()
    for problem in loaded.problems:
        click.echo(f"archlint: {problem}", err=True)
    width = max((len(r.name) for r in loaded.rules), default=10)
    for rule in loaded.rules:
        click.echo(f"{rule.code}  {rule.name:<{width}}  {str(rule.severity):<7}  {rule.summary}")


@main.command()
@click.argument("code")
def explain(code: str) -> None:
    """Show a rule's full documentation with its examples."""
    from .registry import load_rules

    rules = load_rules().by_code()
    rule = rules.get(code.upper()) or next((r for r in rules.values() if r.name == code), None)
    if rule is None:
        _fail(f"no rule {code!r}. `archlint rules` lists them all.")
    click.echo(rule.docs_markdown(), nl=False)


@main.group(name="worker")
def worker_group() -> None:
    """The warm worker: a background process with torch imported, to which `check` and
    `report` hand their runs.

    It starts the first time a run has to lint a file, serves each run in a forked child that
    writes straight to your terminal, and exits after `worker-idle` seconds (default 900)
    without a request. It never imports your own modules: each run imports them afresh. One
    worker runs per environment (Python, sys.path, installed packages, archlint's files,
    relevant environment variables); a stale one is replaced. Off with --no-worker, `worker =
    false` in [tool.archlint] or ARCHLINT_NO_WORKER=1, and when CI is set.
    """


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@worker_group.command(name="status")
def worker_status() -> None:
    """Workers of this user: pid, key, uptime, idle time, requests served. Exits 0 when one
    serves this environment, 1 when none does."""
    from .config import load_settings
    from .worker import client, environment

    identity, found, problem = client.workers()
    try:
        disabled = environment.disabled_reason(False, load_settings(Path.cwd()))
    except ArchlintError:
        disabled = None
    if disabled:
        click.echo(f"archlint: runs from here do not use a worker: {disabled}")
    if problem:
        click.echo(f"archlint: no worker can run: {problem}")
    ours = False
    for path, status in found:
        if status is None:
            click.echo(f"archlint: {path}: no answer (a worker that is starting, or a dead one's socket)")
            continue
        mine = identity is not None and status.get("key") == identity.key
        ours = ours or mine
        where = "this environment" if mine else "another environment"
        click.echo(f"worker {status.get('pid')} ({where}): up {_duration(status.get('uptime', 0))}, "
                   f"idle {_duration(status.get('idle', 0))} of {_duration(status.get('idle_timeout', 0))}, "
                   f"{status.get('requests', 0)} requests served, {status.get('running', 0)} running"
                   + (f", stopping ({status['stopping']})" if status.get("stopping") else ""))
        click.echo(f"  key {status.get('name')}  archlint {status.get('archlint')}  python {status.get('python')}")
        ahead = status.get("preloaded") or []
        click.echo(f"  imported ahead: torch{''.join(', ' + n for n in ahead)}"
                   + (f"; still to import: {', '.join(status['pending'])}" if status.get("pending") else "")
                   + (f"; refused: {', '.join(status['refused'])}" if status.get("refused") else ""))
        click.echo(f"  log {status.get('log')}")
    if not ours:
        click.echo("archlint: no worker for this environment")
    sys.exit(0 if ours else 1)


@worker_group.command(name="stop")
@click.option("--all", "everything", is_flag=True, help="Stop every worker of this user, not only this environment's.")
def worker_stop(everything: bool) -> None:
    """Stop this environment's worker (it finishes nothing: running requests go back to their
    clients, which run them themselves)."""
    from .worker import client

    identity, found, problem = client.workers()
    stopped = 0
    for path, status in found:
        if status is None or (not everything and (identity is None or status.get("key") != identity.key)):
            continue
        pid = client.stop(identity, path)
        if pid is not None:
            click.echo(f"archlint: stopped worker {pid}")
            stopped += 1
    if not stopped:
        click.echo("archlint: no worker running" + ("" if everything else " for this environment"))


if __name__ == "__main__":  # pragma: no cover
    main()
