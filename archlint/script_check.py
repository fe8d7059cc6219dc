"""Is a file a script? Decided from its syntax, before anything is imported.

In folder and pre-commit runs archlint imports every file that might build a model. A training
script's top level parses the command line, trains, writes files or connects as soon as it is
imported; archlint must not run that (the script would print its usage with archlint's own
arguments, create folders in the repository, download weights, start training). This module
reads what a file runs at import time (module-level statements, class bodies, decorators, default
arguments, and the bodies of the file's own functions called from there) and names the first
action a model file does not take.

It errs towards importing: a false "script" verdict silently stops linting a real model file, so
only actions it can name for certain count. Building a model or an example input, constants,
`__all__`, logging setup, seeding, `sys.path` edits, `try/except ImportError`, `if TYPE_CHECKING`
and everything under `if __name__ == "__main__":` are what model files do, and never count.

Torch-free and cheap (one `ast.parse` and one walk of what runs at import): it runs on every file
a pre-commit hook passes.

Compiling a C++/CUDA extension at import (`torch.utils.cpp_extension.load`, as StyleGAN2's and
BasicSR's op files do) is building the model's layers, not running a script: such files are
imported, as the model files that import them must be anyway.
"""
from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

# What each kind of action is called in the note the user reads.
KINDS = {
    "arguments": "parses command-line arguments",
    "training": "runs a training or evaluation loop",
    "writes": "writes files",
    "network": "connects to the network",
    "process": "starts processes",
}


@dataclass(frozen=True)
class ScriptAction:
    """The first thing a file does at import that a model file does not."""

    line: int
    kind: str  # a key of KINDS
    what: str  # "parses command-line arguments", "calls main(), which ...", for the note
    code: str  # the statement or call, as written (first line, shortened)

    def to_dict(self) -> dict[str, object]:
        return {"line": self.line, "kind": self.kind, "what": self.what, "code": self.code}


def find_script_action(path: str | os.PathLike) -> ScriptAction | None:
    """The action that makes `path` a script, or None when importing it looks safe (also when
    it cannot be read or parsed: the import then reports that, with the line)."""
    try:
        source = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return script_action_in(source)


def script_action_in(source: str) -> ScriptAction | None:
    try:
        tree = ast.parse(source)
        return next(_Reader(tree, source).actions(tree.body), None)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None  # the import reports a file Python cannot parse, with its line


# --- what counts -------------------------------------------------------------------------------

# Methods that read sys.argv unless given an explicit list.
_PARSE_METHODS = {"parse_args", "parse_known_args", "parse_intermixed_args",
                  "parse_known_intermixed_args", "parse_args_into_dataclasses"}
# Calls that run a command-line app (which reads sys.argv).
_CLI_CALLS = {"fire.Fire", "absl.app.run", "typer.run", "tyro.cli", "jsonargparse.CLI",
              "jsonargparse.auto_cli", "tensorflow.compat.v1.app.run", "tensorflow.app.run"}
# Decorators that turn a function into a command-line app: calling it parses sys.argv.
_CLI_DECORATORS = {"click.command", "click.group", "hydra.main"}
_CLI_FACTORIES = {"typer.Typer"}

_WRITE_CALLS = {
    "os.makedirs", "os.mkdir", "os.remove", "os.unlink", "os.rmdir", "os.removedirs", "os.rename",
    "os.renames", "os.replace", "os.symlink", "os.link", "os.truncate",
    "shutil.copy", "shutil.copy2", "shutil.copyfile", "shutil.copytree", "shutil.move",
    "shutil.rmtree", "shutil.make_archive", "shutil.unpack_archive",
    "torch.save", "torch.jit.save", "torch.onnx.export",
    "numpy.save", "numpy.savez", "numpy.savez_compressed", "numpy.savetxt",
    "matplotlib.pyplot.savefig", "scipy.io.savemat", "distutils.dir_util.mkpath",
}
# Final names that write whatever object or module they are called on.
_WRITE_NAMES = {"mkdir", "makedirs", "mkdir_or_exist", "write_text", "write_bytes", "touch",
                "savefig", "save_image", "imwrite", "imsave", "to_csv", "save_pretrained"}
# Openers whose second argument is the mode; other `.open(` methods (Path.open) take it first.
_OPENERS = {"open", "io.open", "codecs.open", "gzip.open", "bz2.open", "lzma.open", "tarfile.open",
            "zipfile.ZipFile", "h5py.File"}
_WRITE_MODE = re.compile(r"^[rwxabtU+]*[wxa+][rwxabtU+]*$")
# Experiment trackers: they create run folders and connect to their servers.
_LOGGER_CALLS = {"wandb.init", "wandb.login", "mlflow.start_run", "neptune.init", "neptune.init_run",
                 "comet_ml.Experiment", "clearml.Task.init"}

_NETWORK_CALLS = {
    "urllib.request.urlopen", "urllib.request.urlretrieve", "urllib.urlopen", "urllib.urlretrieve",
    "urllib2.urlopen", "socket.socket", "socket.create_connection", "socket.create_server",
    "http.client.HTTPConnection", "http.client.HTTPSConnection", "ftplib.FTP", "smtplib.SMTP",
    "torch.hub.load", "torch.hub.load_state_dict_from_url", "torch.hub.download_url_to_file",
    "torch.utils.model_zoo.load_url",
}
# The same calls under whatever module re-exports them (torchvision.models.utils, six.moves).
_NETWORK_NAMES = {"load_state_dict_from_url", "load_url", "urlopen", "urlretrieve"}
# Distributed set-up, whatever module it is imported from: it waits for and connects to peers.
_DISTRIBUTED_NAMES = {"init_process_group", "init_device_mesh", "init_rpc", "init_distributed"}
_REQUESTS_METHODS = {"get", "post", "put", "patch", "delete", "head", "options", "request"}
_PROCESS_CALLS = {
    "subprocess.run", "subprocess.call", "subprocess.check_call", "subprocess.check_output",
    "subprocess.Popen", "subprocess.getoutput", "subprocess.getstatusoutput", "os.system",
    "os.popen", "os.fork", "pty.spawn", "torch.multiprocessing.spawn",
}
_PROCESS_PREFIXES = ("os.exec", "os.spawn", "os.posix_spawn")

_ENVIRONMENT = re.compile(r"^os\.(environ|getenv)$")

# In a loop at import: the steps of training.
_TRAINING_METHODS = {"backward", "zero_grad"}
_STEPPERS = re.compile(r"opt|sched|scaler")  # optimizer_G.step(), opt_d.step(), scaler.step(opt)
_LOOP_WRAPPERS = {"enumerate", "tqdm", "tqdm.tqdm", "tqdm.auto.tqdm", "zip", "iter", "itertools.islice"}


def _short(text: str, limit: int = 70) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3].rstrip() + "..."


def _final(name: str) -> str:
    return name.rsplit(".", 1)[-1].removesuffix("()")


class _Reader:
    """What one module runs at import, read from its tree."""

    def __init__(self, tree: ast.Module, source: str):
        self.source = source
        # Local name -> what it was imported as: `np` -> "numpy", `makedirs` -> "os.makedirs".
        self.aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self.aliases[alias.asname] = alias.name
                    else:
                        first = alias.name.split(".")[0]
                        self.aliases.setdefault(first, first)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        self.functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
        self.cli_apps: set[str] = set()  # names that parse sys.argv when called
        self.loaders: set[str] = set()  # names bound to a DataLoader(...) at the top level
        self.from_environment: set[str] = set()  # names bound to os.environ[...] / os.getenv(...)
        for node in tree.body:
            self._note_definitions(node)
        self.followed: set[str] = set()

    def _note_definitions(self, node: ast.stmt) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self.functions[node.name] = node
            if any(self.qualified(d.func if isinstance(d, ast.Call) else d) in _CLI_DECORATORS
                   for d in node.decorator_list):
                self.cli_apps.add(node.name)
        elif isinstance(node, ast.Assign) and any(
                isinstance(n, (ast.Name, ast.Attribute)) and _ENVIRONMENT.match(self.qualified(n))
                for n in ast.walk(node.value)):
            self.from_environment |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            called = self.qualified(node.value.func)
            for target in node.targets:
                if isinstance(target, ast.Name):
                    if called in _CLI_FACTORIES:
                        self.cli_apps.add(target.id)
                    if _final(called) == "DataLoader":
                        self.loaders.add(target.id)
        elif isinstance(node, (ast.If, ast.Try)):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    self._note_definitions(child)
            for handler in getattr(node, "handlers", []):
                for child in handler.body:
                    self._note_definitions(child)

    # --- names ------------------------------------------------------------------------------

    def qualified(self, node: ast.AST) -> str:
        """`np.save` -> "numpy.save", `ArgumentParser().parse_args` -> "argparse.ArgumentParser().parse_args"."""
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            return f"{self.qualified(node.value)}.{node.attr}"
        if isinstance(node, ast.Call):
            return f"{self.qualified(node.func)}()"
        return "?"

    def _code(self, node: ast.AST) -> str:
        """The line the action is on, as written: `opt = parser.parse_args()`."""
        line = getattr(node, "lineno", 0)
        lines = self.source.splitlines()
        return _short(lines[line - 1]) if 0 < line <= len(lines) else ""

    def _action(self, node: ast.AST, kind: str, what: str | None = None) -> ScriptAction:
        return ScriptAction(getattr(node, "lineno", 0), kind, what or KINDS[kind], self._code(node))

    # --- statements that run at import ------------------------------------------------------

    def actions(self, body: list[ast.stmt], followed: bool = False) -> Iterator[ScriptAction]:
        """Every action of these statements, in order. `followed`: the body of one of the
        file's functions, called at import; what it does only in a branch (`if pretrained:
        download...`) depends on its arguments and does not count."""
        for stmt in body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                # The body runs when called; decorators and default values run now.
                yield from self._in_expressions([*stmt.decorator_list, *stmt.args.defaults,
                                                 *[d for d in stmt.args.kw_defaults if d is not None]])
            elif isinstance(stmt, ast.ClassDef):
                yield from self._in_expressions([*stmt.decorator_list, *stmt.bases,
                                                 *[k.value for k in stmt.keywords]])
                yield from self.actions(stmt.body, followed)
            elif isinstance(stmt, ast.If):
                guard = _guard(stmt.test)
                if guard == "main":
                    yield from self.actions(stmt.orelse, followed)
                elif guard == "not-main":
                    yield from self.actions(stmt.body, followed)
                elif guard == "never":
                    yield from self.actions(stmt.orelse, followed)
                else:
                    yield from self._in_expressions([stmt.test])
                    # A branch taken on an environment variable is an opt-in (BasicSR's
                    # `if BASICSR_JIT == "True":`), like one on a function's argument.
                    if not followed and not self._reads_environment(stmt.test):
                        yield from self.actions(stmt.body, followed)
                        yield from self.actions(stmt.orelse, followed)
            elif isinstance(stmt, (ast.For, ast.AsyncFor, ast.While)):
                loop = self._training_loop(stmt)
                if loop is not None:
                    yield loop
                    continue
                yield from self._in_expressions([stmt.iter if isinstance(stmt, (ast.For, ast.AsyncFor))
                                                 else stmt.test])
                yield from self.actions(stmt.body, followed)
                yield from self.actions(stmt.orelse, followed)
            elif isinstance(stmt, (ast.Try, getattr(ast, "TryStar", ast.Try))):
                yield from self.actions(stmt.body, followed)
                if not followed:
                    for handler in stmt.handlers:
                        yield from self.actions(handler.body, followed)
                yield from self.actions(stmt.orelse, followed)
                yield from self.actions(stmt.finalbody, followed)
            elif isinstance(stmt, (ast.With, ast.AsyncWith)):
                yield from self._in_expressions([item.context_expr for item in stmt.items])
                yield from self.actions(stmt.body, followed)
            elif isinstance(stmt, ast.Match):
                yield from self._in_expressions([stmt.subject])
                if not followed:
                    for case in stmt.cases:
                        yield from self.actions(case.body, followed)
            else:
                yield from self._in_expressions([stmt])

    def _in_expressions(self, nodes: list[ast.AST]) -> Iterator[ScriptAction]:
        """Actions of the calls in these expressions (or simple statements); lambdas' bodies
        do not run now and are not read."""
        stack = list(reversed(nodes))
        while stack:
            node = stack.pop()
            if isinstance(node, ast.Lambda):
                stack.extend(reversed(node.args.defaults))
                continue
            if isinstance(node, ast.Subscript) and self._is_argv(node.value):
                if _reads_beyond_program_name(node):
                    yield self._action(node, "arguments", "reads command-line arguments (sys.argv)")
                    continue
                stack.append(node.slice)
                continue
            if isinstance(node, ast.Call):
                found = self._call(node)
                if found is not None:
                    yield found
                    continue
            stack.extend(reversed(list(ast.iter_child_nodes(node))))

    def _reads_environment(self, test: ast.expr) -> bool:
        """Does the condition read an environment variable, directly or through a name the
        top level bound to one (`BASICSR_JIT = os.getenv("BASICSR_JIT")`)?"""
        for node in ast.walk(test):
            if isinstance(node, ast.Name) and node.id in self.from_environment:
                return True
            if isinstance(node, (ast.Name, ast.Attribute)) and _ENVIRONMENT.match(self.qualified(node)):
                return True
        return False

    def _is_argv(self, node: ast.AST) -> bool:
        return isinstance(node, (ast.Name, ast.Attribute)) and self.qualified(node) == "sys.argv"

    # --- calls ------------------------------------------------------------------------------

    def _call(self, call: ast.Call) -> ScriptAction | None:
        name = self.qualified(call.func)
        final = _final(name)
        if isinstance(call.func, ast.Attribute) and final in _PARSE_METHODS and not _explicit_args(call):
            return self._action(call, "arguments")
        if name in _CLI_CALLS or final == "LightningCLI":
            return self._action(call, "arguments", f"runs a command-line app ({final})")
        if isinstance(call.func, ast.Name) and call.func.id in self.cli_apps:
            return self._action(call, "arguments", f"runs the command-line app {call.func.id}()")
        if name in _WRITE_CALLS or final in _WRITE_NAMES or (
                final == "save" and isinstance(call.func, ast.Attribute) and call.args):
            return self._action(call, "writes")  # .save(path): a traced module, an image, ...
        if final == "open" or name in _OPENERS:
            mode = _mode_argument(call, second=name in _OPENERS)
            if mode is not None and _WRITE_MODE.match(mode):
                return self._action(call, "writes", f"opens a file for writing (mode {mode!r})")
        if final == "SummaryWriter":
            return self._action(call, "writes", "starts a TensorBoard writer (it creates a log folder)")
        if name in _LOGGER_CALLS:
            return self._action(call, "network", f"starts an experiment logger ({name}: it writes "
                                "files and connects)")
        if (name in _NETWORK_CALLS or final in _NETWORK_NAMES or "download" in final.lower()
                or (name.startswith("requests.") and final in _REQUESTS_METHODS)):
            what = "downloads" if "download" in final.lower() or final in _NETWORK_NAMES \
                or name == "torch.hub.load" else None
            return self._action(call, "network", what)
        if final in _DISTRIBUTED_NAMES:
            return self._action(call, "network", f"starts distributed training ({final})")
        if any(k.arg == "download" and isinstance(k.value, ast.Constant) and k.value.value is True
               for k in call.keywords):
            return self._action(call, "network", "downloads a dataset (download=True)")
        if name in _PROCESS_CALLS or name.startswith(_PROCESS_PREFIXES):
            return self._action(call, "process")
        if isinstance(call.func, ast.Name) and call.func.id in self.functions \
                and call.func.id not in self.followed:
            return self._follow(call, self.functions[call.func.id])
        return None

    def _follow(self, call: ast.Call, function: ast.FunctionDef | ast.AsyncFunctionDef) -> ScriptAction | None:
        """One of this file's functions called at import: what its body does unconditionally."""
        self.followed.add(function.name)
        inner = next(self.actions(function.body, followed=True), None)
        if inner is None:
            return None
        return ScriptAction(call.lineno, inner.kind,
                            f"calls {function.name}(), which {inner.what} (line {inner.line}: "
                            f"`{inner.code}`)", self._code(call))

    # --- loops ------------------------------------------------------------------------------

    def _training_loop(self, loop: ast.For | ast.AsyncFor | ast.While) -> ScriptAction | None:
        """A loop that steps an optimizer, calls backward or .train(), or iterates a DataLoader."""
        stack: list[ast.AST] = [loop]
        per_item: set[str] = set()  # `for m in model.modules(): m.train()` sets a mode, per module
        while stack:
            node = stack.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                continue
            if isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
                if self._is_loader(node.iter):
                    return self._loop_action(loop, f"iterates a DataLoader (line {node.iter.lineno})")
                per_item |= {n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)}
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                method = node.func.attr
                receiver = _final(self.qualified(node.func.value)).lower()
                if (method in _TRAINING_METHODS or method == "fit"
                        or (method == "step" and _STEPPERS.search(receiver))
                        or (method == "train" and _trains(node) and not (
                            isinstance(node.func.value, ast.Name) and node.func.value.id in per_item))):
                    return self._loop_action(loop, f"calls .{method}() at line {node.lineno}")
            stack.extend(reversed(list(ast.iter_child_nodes(node))))  # in source order
        return None

    def _loop_action(self, loop: ast.AST, detail: str) -> ScriptAction:
        return self._action(loop, "training", f"{KINDS['training']} (it {detail})")

    def _is_loader(self, node: ast.AST) -> bool:
        while isinstance(node, ast.Call) and self.qualified(node.func) in _LOOP_WRAPPERS and node.args:
            if self.qualified(node.func) == "zip":
                return any(self._is_loader(a) for a in node.args)
            node = node.args[0]
        if isinstance(node, ast.Call):
            return _final(self.qualified(node.func)) == "DataLoader"
        if isinstance(node, ast.Name):
            return node.id in self.loaders or "loader" in node.id.lower()
        if isinstance(node, ast.Attribute):
            return "loader" in node.attr.lower()
        return False


def _guard(test: ast.expr) -> str | None:
    """"main" for `if __name__ == "__main__":` (and `... and more`), "not-main" for `!=`,
    "never" for `if TYPE_CHECKING:` and `if False:`, else None."""
    if isinstance(test, ast.BoolOp):
        guards = [_guard(v) for v in test.values]
        if isinstance(test.op, ast.And) and "main" in guards:
            return "main"
        if isinstance(test.op, ast.Or) and "main" in guards:
            return "main"  # unclear when it runs: the branch is given the benefit of the doubt
        return None
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        sides = [test.left, test.comparators[0]]
        names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
        values = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"
                  or isinstance(s, (ast.Tuple, ast.List, ast.Set))
                  and any(isinstance(e, ast.Constant) and e.value == "__main__" for e in s.elts)]
        if names and values:
            if isinstance(test.ops[0], (ast.Eq, ast.In, ast.Is)):
                return "main"
            if isinstance(test.ops[0], (ast.NotEq, ast.NotIn, ast.IsNot)):
                return "not-main"
    if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
        return "never"
    if isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING":
        return "never"
    if isinstance(test, ast.Constant) and not test.value:
        return "never"
    return None


def _trains(call: ast.Call) -> bool:
    """`.train()` or `.train(True)`, not `.train(False)` (evaluation mode)."""
    mode = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "mode"), None)
    return not (isinstance(mode, ast.Constant) and mode.value is False)


def _explicit_args(call: ast.Call) -> bool:
    """`parser.parse_args(["--depth", "18"])`: a list of its own, not the command line."""
    given = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "args"), None)
    if given is None or (isinstance(given, ast.Constant) and given.value is None):
        return False
    return isinstance(given, (ast.List, ast.Tuple)) or (isinstance(given, ast.Constant)
                                                        and isinstance(given.value, str))


def _reads_beyond_program_name(subscript: ast.Subscript) -> bool:
    if not isinstance(subscript.ctx, ast.Load):
        return False  # sys.argv[1:] = [...] sets it
    index = subscript.slice
    return not (isinstance(index, ast.Constant) and index.value == 0)


def _mode_argument(call: ast.Call, second: bool) -> str | None:
    position = 1 if second else 0
    mode = call.args[position] if len(call.args) > position else \
        next((k.value for k in call.keywords if k.arg == "mode"), None)
    if isinstance(mode, ast.Constant) and isinstance(mode.value, str):
        return mode.value
    return None


def note(action: ScriptAction, named_by_hook: bool = False) -> str:
    """Why the file was not imported and how to have it linted, for every output format.
    `named_by_hook`: a pre-commit run, where naming the file is not the user's to do."""
    anyway = ("list it in `import-scripts` under [tool.archlint] to import it anyway" if named_by_hook
              else "name the file on the command line (or list it in `import-scripts` under "
                   "[tool.archlint]) to import it anyway")
    return (f"its top level runs as a script (line {action.line} {action.what}: `{action.code}`). "
            f"To lint it, move that code under `if __name__ == \"__main__\":`, "
            f"or {anyway}.")
