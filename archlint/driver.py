"""The one driver of `archlint check` over paths: expand them, answer each file from the cache
where possible, load, build and lint the rest (each file in its own child process), and gather
one `Report` for the caller to filter through a baseline and render.

The CLI, the API (`archlint.check_paths`), the pre-commit hook and the tests all run this.
Nothing here imports torch at module level: a run answered wholly from the cache, or one that
skips every file from its syntax, must not pay for it. The first file that needs linting
imports torch and the pipeline in this process, before any child is forked, so every child
starts warm.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import nullcontext
from typing import Callable, Sequence

from .cache import ResultCache, recording_environ, recording_imports
from .config import Settings
from .errors import ArchlintError, ConfigError, IsolationError, NoModelError, caused_by, too_deep
from .prefilter import expand_paths, is_excluded
from .results import ModelReport, Report
from .script_check import find_script_action, note


def _shown(path: str) -> str:
    """As sources.display_path, without importing torch: relative to the working folder."""
    real = os.path.realpath(path)
    cwd = os.path.realpath(os.getcwd()) + os.sep
    return real[len(cwd):] if real.startswith(cwd) else path


def _failed(path: str, names: Sequence[str], error: ArchlintError) -> ModelReport:
    return ModelReport(target=_shown(path) + ("::" + ",".join(names) if names else ""), error=error)


def check_file(path: str, names: Sequence[str], explicit: bool, settings: Settings) -> list[ModelReport]:
    """Lint the models one file builds (or the named ones), in this process. A file found by
    walking a folder that turns out to build no model yields no report at all."""
    from . import load
    from .inputs import check_arity, for_target
    from .pipeline import lint_model

    cwd = os.getcwd()  # the user's file may chdir at import; later relative paths need this one
    started = time.perf_counter()
    try:
        try:
            targets = load.load_targets(path, names)
        except NoModelError as exc:
            return [_failed(path, names, exc)] if explicit else []
        except ArchlintError as exc:
            return [_failed(path, names, exc)]
        finally:
            _restore_cwd(cwd)
        load_time = time.perf_counter() - started
        reports = []
        if explicit and all(t.not_built for t in targets):
            listed = "; ".join(f"{t.name.rsplit('::', 1)[1]}: {t.not_built}" for t in targets)
            return [_failed(path, names, NoModelError(f"{_shown(path)}: no model built. {listed}."))]
        for target in targets:
            if target.not_built:
                reports.append(ModelReport(target=target.name, skipped=target.not_built))
                continue
            model_report = ModelReport(target=target.name)
            model_report.timings["load"] = load_time
            try:
                started = time.perf_counter()
                model = load.build_target(target)
                model_report.timings["build"] = time.perf_counter() - started
                name = target.name.rsplit("::", 1)[-1]
                inputs = for_target(model, target.module, name, settings.cli_input_shapes,
                                    settings.input_shapes)
                check_arity(model, inputs, target.name)
                lint_model(model, inputs, settings, report=model_report, owned=True)
            except ArchlintError as exc:
                model_report.error = too_deep(exc) or exc
            except RecursionError as exc:
                model_report.error = too_deep(exc)
            finally:
                _restore_cwd(cwd)
            reports.append(model_report)
        return reports
    finally:
        _restore_cwd(cwd)


def set_aside_as_script(path: str, settings: Settings, named_by_hook: bool) -> ModelReport | None:
    """The report of a file found in a folder (or passed by a pre-commit hook) whose top level
    runs a script, which is therefore not imported; None to import it. Files matching
    `import-scripts` are imported anyway."""
    if settings.import_scripts is True or (
            settings.import_scripts and is_excluded(path, settings.import_scripts, settings.root)):
        return None
    action = find_script_action(path)
    if action is None:
        return None
    return ModelReport(target=_shown(path), skipped=note(action, named_by_hook), script=action.to_dict())


def _restore_cwd(cwd: str) -> None:
    try:
        if os.getcwd() != cwd:
            os.chdir(cwd)
    except OSError:
        os.chdir(cwd)


def _warm_up(settings: Settings) -> None:
    """Import what every child needs once, here, before forking; check the rule codes the
    settings name against the rules loaded."""
    from . import load, pipeline  # noqa: F401  (imports torch)
    from .config import check_codes
    from .registry import load_rules

    check_codes(settings, [rule.code for rule in load_rules().rules])
    _trace_once()


_warmed = False


def _trace_once() -> None:
    """Lint a tiny model here once: the first trace imports some 800 modules (sympy, dynamo's
    pieces) and fills torch's caches, 2-3 s that every forked child would otherwise pay again."""
    global _warmed
    if _warmed:
        return
    _warmed = True
    try:
        from torch import nn

        from .inputs import ExampleInputs, from_shapes
        from .pipeline import lint_model

        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
        lint_model(model, ExampleInputs(from_shapes([(1, 3, 16, 16)]), "warm-up"), Settings())
    except Exception:  # only a head start; a failure here shows up, if real, in the user's file
        pass


def _lint_isolated(path: str, names: Sequence[str], explicit: bool, settings: Settings,
                   record: bool) -> tuple[list[ModelReport], set[str] | None, dict | None, str]:
    """(reports, project files read, environment variables read, captured output) of one file,
    linted in a child process."""
    from . import isolation, portable

    def work():
        from .worker import preload

        before = set(sys.modules)
        # Recording costs a realpath per import: only worth it when the result is stored.
        with (recording_imports() if record else nullcontext()) as imports, recording_environ() as environ:
            models = check_file(path, names, explicit, settings)
        preload.note_new_packages(before)  # what the warm worker may import ahead next time
        for model in models:
            _keep_debug_details(model)
            if caused_by(model.error, MemoryError) is not None:
                # The address-space limit hit first: the same stop as the RSS watch's.
                model.error = IsolationError(
                    f"building and tracing stopped: it ran out of memory under the limit of "
                    f"{settings.memory_limit} MB ({model.error.message})",
                    hint="Raise `memory-limit` (MB) in [tool.archlint] if the model really needs it.",
                    cause="memory")
        deps = imports.project_dependencies(path) if record else None
        return [portable.detach(m) for m in models], deps, environ.reads

    label = _shown(path)
    outcome = isolation.run(work, timeout=settings.timeout, memory_mb=settings.memory_limit, label=label)
    if outcome.error is not None:
        return [_failed(path, names, outcome.error)], None, None, outcome.output
    models, deps, env = outcome.value
    return models, deps, env, outcome.output


def _keep_debug_details(model: ModelReport) -> None:
    """The traceback does not survive pickling; its text does, for --debug."""
    import traceback

    if model.error is not None and not getattr(model.error, "details", ""):
        model.error.details = "".join(traceback.format_exception(model.error))


def check_paths(specs: Sequence[str], settings: Settings, *, use_cache: bool = False,
                skip_no_model: bool = False, cache: ResultCache | None = None,
                isolate: bool = True, before_first_lint: Callable[[], None] | None = None) -> Report:
    """Lint every target PATHS name. `use_cache`: answer unchanged files from .archlint_cache/
    (or `cache`) and store new answers. `isolate`: each file in a child process (the default;
    off only for callers that need the live model objects). `before_first_lint` is called
    once, before the first file that must be linted imports torch (the CLI hands the run to
    the warm worker there, archlint/worker/)."""
    if not specs:
        raise ConfigError("no files given. Usage: archlint check mymodel.py [file.py::Model ...]")
    files = expand_paths(specs, skip_no_model=skip_no_model, exclude=settings.exclude,
                         exclude_root=settings.root)
    if not files and not skip_no_model:
        raise ConfigError(f"{', '.join(specs)}: no Python file that builds a model found there.",
                          hint="Point archlint at the .py files that build your models "
                               "(files matching `exclude` in [tool.archlint] are left out).",
                          cause="no-files", kind="usage")
    if use_cache and cache is None:
        cache = ResultCache.for_settings(settings, start=files[0][0] if files else None)
    report = Report()
    problems: list[str] = []
    warm = False
    for path, names, explicit in files:
        # Decided from the syntax, before the cache: a cached answer may come from a run that
        # imported the file (named, or listed in `import-scripts`).
        script = None if explicit else set_aside_as_script(path, settings, skip_no_model)
        if script is not None:
            report.models.append(script)
            continue
        slot_key = cache.key(path, names, explicit, settings) if use_cache else None
        hit = cache.get(slot_key) if use_cache else None
        if hit is not None:
            models, stored_problems = hit
            problems += [p for p in stored_problems if p not in problems]
            report.models.extend(models)
            continue
        if not warm:
            if before_first_lint is not None:
                before_first_lint()
            _warm_up(settings)  # the first file that needs linting pays for importing torch
            from .registry import load_rules

            problems += [p for p in load_rules().problems if p not in problems]
            report.rules = list(load_rules().rules)
            warm = True
        if isolate:
            models, deps, env, output = _lint_isolated(path, names, explicit, settings, use_cache)
        else:
            with recording_imports() as imports, recording_environ() as environ:
                models = check_file(path, names, explicit, settings)
            deps, env, output = imports.project_dependencies(path) if use_cache else None, environ.reads, ""
        if output.strip():
            _attach_output(models, output)
        if use_cache and deps is not None:
            from .registry import load_rules

            cache.put(slot_key, models, deps, load_rules().problems, environ=env)
        report.models.extend(models)
    report.problems = problems
    return report


def _attach_output(models: list[ModelReport], output: str) -> None:
    lines = len(output.rstrip("\n").splitlines())
    for model in models:
        model.output = output
        model.notes.append(f"the file wrote {lines} line{'' if lines == 1 else 's'} to stdout/stderr "
                           "while it was loaded and traced (kept off archlint's output; --debug shows it)")
