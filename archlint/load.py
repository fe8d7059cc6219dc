"""Load: import the user's file, find the models it builds, build them, find the example input.

The file is imported the way pytest imports a test file: the first folder above it that is not
a package goes on sys.path, and the file is imported under its dotted name, so that its own
imports of sibling modules work. Models are built with their parameters on the meta device
(`meta_parameters`), so building one costs no memory for weights; a model whose constructor
cannot run that way is built again normally.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from . import load_mmdet, no_download, sources
from .errors import BuildError, LoadError, NoModelError
from .prefilter import file_might_build_model  # noqa: F401  (re-exported; torch-free)

@dataclass
class Target:
    """One model to lint: `file.py::name`, built on demand."""

    name: str  # as shown to the user: "examples/net.py::Net"
    path: Path
    build: Callable[[], nn.Module]
    module: ModuleType | None = None  # the imported file, for its example_input
    submodule: str | None = None  # dotted path below the built object
    not_built: str | None = None  # why archlint cannot build it (constructor arguments)


# --- building without memory ----------------------------------------------------------------

@contextmanager
def meta_parameters() -> Iterator[None]:
    """Every parameter registered while active is moved to the meta device (as accelerate's
    init_empty_weights does). Other tensors stay real, so constructors that compute with them
    (say `torch.linspace(...).tolist()` for drop-path rates) still run."""
    original = nn.Module.register_parameter

    def register(self, name, param):
        original(self, name, param)
        param = self._parameters.get(name)
        if (
            param is not None
            and param.device.type != "meta"
            and not isinstance(param, nn.parameter.UninitializedParameter)
        ):
            extra = dict(param.__dict__)
            meta = type(param)(param.to("meta"), requires_grad=param.requires_grad)
            meta.__dict__.update(extra)
            self._parameters[name] = meta

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original


# In-place ops that only change values. On a meta tensor there are no values, yet each call
# still runs torch's Python meta decomposition (~1-3 ms); weight initialization makes hundreds
# of them, most of a meta build's time (timm convnext_base: 1.9 s -> 0.4 s without them).
_VALUE_ONLY_INPLACE = frozenset({
    "uniform_", "normal_", "trunc_normal_", "fill_", "zero_", "constant_", "zeros_", "ones_",
    "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_", "erfinv_",
    "mul_", "div_", "add_", "sub_", "clamp_", "clamp_min_", "clamp_max_", "sqrt_", "copy_",
    "exponential_", "bernoulli_", "random_", "log_normal_", "cauchy_", "geometric_",
})


class _SkipMetaValueWrites(torch.overrides.TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if func is torch.empty and (kwargs or {}).get("device") in (None, "cpu", torch.device("cpu")):
            # torch.empty is how layers allocate their weights before initializing them: made
            # on meta it never allocates, so nn.Linear(10**6, 10**5) costs nothing. Its values
            # are undefined anyway; nothing may read them before the (skipped) init.
            kwargs = {**(kwargs or {}), "device": "meta"}
            return func(*args, **kwargs)
        # torch.nn.init passes its tensor by keyword (`kaiming_uniform_(tensor=w, ...)`): missed,
        # every conv's init ran torch's meta decomposition of uniform_, a third of a deep net's build.
        written = args[0] if args else (kwargs or {}).get("tensor")
        if name in _VALUE_ONLY_INPLACE and isinstance(written, torch.Tensor) and written.is_meta:
            return written
        if name in _VALUE_ONLY_INPLACE and args and isinstance(args[0], torch.Tensor):
            # A real buffer filled from values computed with meta parameters (timm swinv2's
            # relative_coords_table): there are no values to copy; the buffer keeps its shape.
            if name == "copy_" and len(args) > 1 and isinstance(args[1], torch.Tensor) and args[1].is_meta:
                return args[0]
        kwargs = kwargs or {}
        try:
            return func(*args, **kwargs)
        except BaseException as exc:
            if _mixes_devices((args, kwargs)) or _has_meta((args, kwargs)):
                _mark_meta_failure(exc)
            if not isinstance(exc, RuntimeError):
                raise
            # A constructor that runs its layers once on a real dummy input to measure a feature
            # size (timm's HybridEmbed, YOLO's strides) mixes real inputs with meta weights: run
            # it on meta, where shapes come out right. Reading values afterwards still fails,
            # and the model is then built with real weights.
            if "meta" not in str(exc) or not _mixes_devices((args, kwargs)):
                raise
            if name.endswith("_") and isinstance(args[0], torch.Tensor) and not args[0].is_meta:
                return args[0]  # meta values written into a real tensor: there are none
            args, kwargs = torch.utils._pytree.tree_map(_on_meta, (args, kwargs))
            return func(*args, **kwargs)


def _has_meta(value: Any) -> bool:
    return any(isinstance(t, torch.Tensor) and t.is_meta for t in torch.utils._pytree.tree_leaves(value))


def _mark_meta_failure(exc: BaseException) -> None:
    """Remember that `exc` came from an operation on meta tensors: only such a failure means
    the module needs real weights and may be imported a second time."""
    try:
        exc.__archlint_meta_failure__ = True
    except (AttributeError, TypeError):
        pass


def failed_on_meta(exc: BaseException | None) -> bool:
    """Did `exc` (or an exception it was raised from or during) come from a meta operation?"""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if getattr(exc, "__archlint_meta_failure__", False):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _mixes_devices(value: Any) -> bool:
    tensors = [t for t in torch.utils._pytree.tree_leaves(value) if isinstance(t, torch.Tensor)]
    return any(t.is_meta for t in tensors) and any(not t.is_meta for t in tensors)


def _on_meta(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and not value.is_meta and not isinstance(value, nn.Parameter):
        return value.to("meta")
    return value


@contextmanager
def building(on_meta: bool) -> Iterator[None]:
    with sources.record_construction(), no_download.refused():
        if on_meta:
            with meta_parameters(), _SkipMetaValueWrites():
                yield
        else:
            yield


def _raise_if_download(since: int, exc: BaseException) -> None:
    """A load that failed after archlint refused to download: say that, not the library's
    offline error."""
    no_download.note_offline_failure(exc)
    text = no_download.blocked_error_text(since)
    if text is not None:
        attempt = no_download.attempts()[since]
        raise LoadError(text.split(": ", 1)[1] if attempt.path else text,
                        path=attempt.path, line=attempt.line, cause="download") from exc


# --- importing ---------------------------------------------------------------------------------

def _module_name_for(path: Path) -> tuple[Path, str]:
    """(folder to put on sys.path, dotted module name), as pytest's `prepend` import mode."""
    parts = [path.stem]
    folder = path.parent
    while (folder / "__init__.py").exists() and folder.parent != folder:
        parts.append(folder.name)
        folder = folder.parent
    return folder, ".".join(reversed(parts))


def _user_frame(exc: BaseException, path: Path) -> tuple[str, int] | None:
    """The innermost traceback frame in the user's code (the linted file preferred)."""
    frames = traceback.extract_tb(exc.__traceback__)
    for wanted in (lambda f: Path(f.filename).resolve() == path.resolve(),
                   lambda f: sources.Frame(f.filename, f.lineno or 0).is_user_code
                   and not sources.is_internal(f.filename)):
        for frame in reversed(frames):
            if wanted(frame):
                return sources.display_path(frame.filename), frame.lineno or 0
    return None


def _where(exc: BaseException, path: Path) -> str:
    found = _user_frame(exc, path)
    return f"{found[0]}:{found[1]}" if found else sources.display_path(str(path))


def import_file(path: str | os.PathLike) -> ModuleType:
    path = Path(path).resolve()
    shown = sources.display_path(str(path))
    if not path.exists():
        raise LoadError(f"{shown}: no such file. Check the path you passed to archlint.")
    if path.suffix != ".py":
        raise LoadError(f"{shown}: not a Python file. Point archlint at the .py file that builds your model.")
    folder, name = _module_name_for(path)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    existing = sys.modules.get(name)
    if existing is not None and Path(getattr(existing, "__file__", "") or "").resolve() != path:
        name = f"archlint_target_{abs(hash(str(path)))}_{path.stem}"

    since = len(no_download.attempts())

    def run(on_meta: bool) -> ModuleType:
        sys.modules.pop(name, None)
        if "." in name:
            importlib.import_module(name.rsplit(".", 1)[0])
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        cwd = os.getcwd()
        try:
            with building(on_meta):
                spec.loader.exec_module(module)
        finally:
            # A module that chdirs at import must not move the paths archlint shows and writes.
            if os.getcwd() != cwd:
                os.chdir(cwd)
        module.__archlint_meta__ = on_meta
        return module

    try:
        try:
            return run(on_meta=True)
        except Exception as exc:
            # Module-level code that computes with the model's weights needs real ones. Any
            # other failure would only happen again, with the module's side effects twice.
            if not failed_on_meta(exc):
                raise
        return run(on_meta=False)
    except SyntaxError as exc:
        where = f"{sources.display_path(exc.filename or str(path))}:{exc.lineno}"
        raise LoadError(
            f"{where}: the file does not parse ({exc.msg}). Fix the syntax error; archlint has to "
            "import the file to build the model."
        ) from exc
    except ModuleNotFoundError as exc:
        raise LoadError(
            f"{_where(exc, path)}: importing {shown} failed because module {exc.name!r} is not "
            f"installed. Install it, or run archlint in the environment your model runs in."
        ) from exc
    except BaseException as exc:  # the user's module-level code may raise anything
        if isinstance(exc, KeyboardInterrupt):
            raise
        _raise_if_download(since, exc)
        raise LoadError(
            f"{_where(exc, path)}: importing {shown} raised {type(exc).__name__}: {exc}. archlint "
            "imports the file to build the model; fix the error, or guard scripts with "
            "`if __name__ == '__main__':`."
        ) from exc


# --- finding targets ------------------------------------------------------------------------

def _needs_no_arguments(obj: Any) -> bool:
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return False
    return all(
        p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        for p in signature.parameters.values()
    )


def _returns_module(function: Callable) -> bool:
    annotation = inspect.signature(function).return_annotation
    if isinstance(annotation, str):
        return annotation.split(".")[-1] in {"Module", "nn.Module"} or annotation.endswith("Module")
    return inspect.isclass(annotation) and issubclass(annotation, nn.Module)


def _builder(obj: Any, label: str, shown: str) -> Callable[[], nn.Module]:
    """A callable that builds the model behind a module attribute, or raises BuildError."""
    on_meta = True

    def build() -> nn.Module:
        if isinstance(obj, nn.Module):
            return obj
        since = len(no_download.attempts())
        try:
            with building(on_meta):
                model = obj()
        except Exception:
            try:
                with building(False):
                    model = obj()
            except Exception as exc:
                _raise_if_download(since, exc)
                found = _user_frame(exc, Path(inspect.getfile(obj)))
                where = f"{found[0]}:{found[1]}" if found else shown
                raise BuildError(
                    f"{where}: building {label} raised {type(exc).__name__}: {exc}. archlint "
                    "builds classes and factory functions without arguments; give the arguments "
                    "defaults, or add a module-level `model = ...` and lint `file.py::model`."
                ) from exc
        if not isinstance(model, nn.Module):
            raise BuildError(
                f"{shown}: {label} returned {type(model).__name__}, not an nn.Module. Name a "
                "module-level nn.Module, an nn.Module class or a function that returns one."
            )
        return model

    return build


def resolve_target(module: ModuleType, path: Path, spec: str) -> Target:
    """`name` or `name.sub.module`: an instance, a class or a factory function, then a submodule."""
    shown = sources.display_path(str(path))
    head, _, rest = spec.partition(".")
    if not hasattr(module, head):
        candidates = ", ".join(sorted(_candidate_names(module))) or "none"
        raise LoadError(
            f"{shown}: no name {head!r} in the file (models found: {candidates}). Use "
            "file.py::NAME with a module-level nn.Module instance, an nn.Module class that builds "
            "without arguments, or a function that returns a model."
        )
    obj = getattr(module, head)
    if not (isinstance(obj, nn.Module) or callable(obj)):
        raise LoadError(f"{shown}: {head!r} is a {type(obj).__name__}, not a model or a function that builds one.")
    return Target(f"{shown}::{spec}", path, _builder(obj, head, shown), module, rest or None)


def _candidate_names(module: ModuleType) -> list[str]:
    names = []
    for name, obj in vars(module).items():
        if name.startswith("_"):
            continue
        if isinstance(obj, nn.Module):
            names.append(name)
        elif inspect.isclass(obj) and issubclass(obj, nn.Module) and obj.__module__ == module.__name__:
            if _needs_no_arguments(obj) and not inspect.isabstract(obj):
                names.append(name)
        elif inspect.isfunction(obj) and obj.__module__ == module.__name__:
            if _needs_no_arguments(obj) and _returns_module(obj):
                names.append(name)
    return names


def _own_name(target: "Target") -> str:
    return target.name.rsplit("::", 1)[1]


def _has_parameters(model: nn.Module) -> bool:
    return any(True for _ in model.parameters())


def discover_targets(module: ModuleType, path: Path) -> list[Target]:
    """Every model the file builds: module-level instances, classes defined here that build
    without arguments, and factory functions annotated to return an nn.Module. A class whose
    instances only serve as parts of another candidate (a block inside a net) is not a target,
    nor is a module without parameters (an activation, a helper block). Classes defined here
    that need constructor arguments and are no part of a target come back as `not_built`
    entries, so the run can say so instead of passing over them in silence."""
    targets = [resolve_target(module, path, name) for name in _candidate_names(module)]
    instances = [getattr(module, _own_name(t)) for t in targets
                 if isinstance(getattr(module, _own_name(t)), nn.Module)]
    # A class with a module-level instance is linted through that instance.
    part_types = {type(sub) for m in instances for sub in m.modules()}
    kept: list[Target] = []
    for target in targets:
        obj = getattr(module, _own_name(target))
        if inspect.isclass(obj):
            if obj in part_types:
                continue
            try:
                model = target.build()
            except BuildError:
                kept.append(target)  # its error is reported when it is linted
                continue
            target.build = (lambda m: (lambda: m))(model)
            part_types |= {type(sub) for sub in model.modules()} - {type(model)}
            if not _has_parameters(model):
                continue
        elif isinstance(obj, nn.Module) and not _has_parameters(obj):
            continue
        kept.append(target)
    # A class used inside another class-built model is a part, not a model: decided after
    # building, since composition is only visible then.
    kept = [t for t in kept if not (inspect.isclass(getattr(module, _own_name(t)))
                                    and getattr(module, _own_name(t)) in part_types)]
    return kept + _not_built(module, path, part_types)


def _not_built(module: ModuleType, path: Path, used: set[type]) -> list[Target]:
    """Classes of this file that need constructor arguments and serve in no target."""
    shown = sources.display_path(str(path))
    classes = [obj for name, obj in vars(module).items()
               if not name.startswith("_") and inspect.isclass(obj) and issubclass(obj, nn.Module)
               and obj.__module__ == module.__name__ and not inspect.isabstract(obj)]
    bases = {base for cls in classes for base in cls.__mro__[1:]}
    entries = []
    for cls in classes:
        if cls in used or cls in bases or _needs_no_arguments(cls):
            continue
        try:
            params = inspect.signature(cls).parameters.values()
        except (TypeError, ValueError):
            continue
        needed = [p.name for p in params if p.default is inspect.Parameter.empty
                  and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        reason = (f"its constructor needs arguments ({', '.join(needed)}); add `model = "
                  f"{cls.__name__}(...)` at module level or give them defaults to lint it")
        entries.append(Target(f"{shown}::{cls.__name__}", path, _unbuildable(reason), module,
                              not_built=reason))
    return entries


def _unbuildable(reason: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        raise BuildError(reason)
    return build


def load_targets(path: str | os.PathLike, names: Sequence[str] = ()) -> list[Target]:
    path = Path(path).resolve()
    if path.suffix == ".py" and load_mmdet.looks_like_config(path):
        return load_mmdet.load_config_targets(path, names)
    if load_mmdet.mentions_openmmlab(path):
        load_mmdet.prepare()  # before the file imports mmdet.models
    module = import_file(path)
    if names:
        return [resolve_target(module, path, n) for n in names]
    found = discover_targets(module, path)
    if not found:
        raise NoModelError(
            f"{sources.display_path(str(path))}: no model found. The file has no module-level "
            "nn.Module instance, no nn.Module class that builds without arguments and no "
            "function annotated `-> nn.Module` that takes none. Add `model = MyNet(...)` at module "
            "level, or name the target: `archlint check file.py::NAME`."
        )
    return found


def build_target(target: Target) -> nn.Module:
    model = load_mmdet.tensor_mode(target.build())  # unchanged unless an MMDetection detector
    if target.submodule:
        try:
            model = model.get_submodule(target.submodule)
        except AttributeError:
            names = [n for n, _ in model.named_children()]
            raise LoadError(
                f"{target.name}: the model has no submodule {target.submodule!r}. Its children "
                f"are: {', '.join(names) or 'none'}."
            ) from None
    return model


# --- example input ---------------------------------------------------------------------------
