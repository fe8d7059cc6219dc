"""P003 unused-parameters: modules and parameters that forward never uses."""
from __future__ import annotations

import ast
import inspect
import textwrap
from functools import lru_cache

from torch import nn

from archlint.findings import Fix, Severity
from archlint.graph import Layer
from archlint.graph.ops import Kind
from archlint.graph.weights import parameters_of
from archlint.rule import Rule

from ..helpers import conv_call, human, shape_text


_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


class UnusedParameters(Rule):
    code = "P003"
    name = "unused-parameters"
    severity = Severity.WARNING
    summary = "A submodule (or parameter) holds trainable weights that forward never uses."
    what = """
        Compares the model's trainable parameters with the ones the traced forward pass
        reads: through the layers it calls and the parameters it reads directly (a class
        token, a position embedding, `F.linear(x, self.fc.weight)`). A module shared by two
        names, or a parameter tied between two modules, counts as used when either use is
        reached. It reports the largest unused submodule rather than each of its layers.
        When the owning module's code does mention the submodule outside `__init__` (a branch
        the example input did not take, or another method), the finding is information only.
        """
    why = """
        Weights that never take part in forward get no gradient. DistributedDataParallel
        expects a gradient for every parameter and stops with "Expected to have finished
        reduction in the prior iteration" unless you pass find_unused_parameters=True, which
        costs an extra traversal of the graph on every step. Single-GPU training runs, but the
        optimizer still keeps state for them (Adam: two more copies), checkpoints carry them,
        and parameter counts overstate the model. Often it is a bug: a layer built and then
        forgotten in forward.
        """
    how_to_fix = """
        Call the layer in forward if it was meant to be used; otherwise delete it from
        `__init__`. If it is used only sometimes (auxiliary heads in training), keep it and
        construct DistributedDataParallel with find_unused_parameters=True, or freeze it with
        requires_grad_(False) while it is not used.
        """
    references = (
        "PyTorch docs, DistributedDataParallel: find_unused_parameters (https://pytorch.org/docs/stable/generated/torch.nn.parallel.DistributedDataParallel.html)",
        "PyTorch forums: 'Expected to have finished reduction in the prior iteration' (unused parameters under DDP)",
    )
    options = {}
    bad = (
        """
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.features = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
                self.dropout = nn.Dropout(0.2)
                self.head = nn.Linear(32, 10)
                self.extra = nn.Linear(32, 32)  # built, then forgotten

            def forward(self, x):
                return self.head(self.dropout(self.features(x).flatten(1)))

        model = Net()
        example_input = torch.randn(1, 3, 32, 32)
        """,
    )
    good = (
        """
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = nn.Linear(16, 32)
                self.cls_token = nn.Parameter(torch.zeros(1, 1, 32))   # read directly: used
                self.head = nn.Linear(32, 16, bias=False)
                self.head.weight = self.embed.weight                   # tied: used through embed

            def forward(self, x):
                x = self.embed(x)
                x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
                return x @ self.head.weight

        model = Net()
        example_input = torch.randn(1, 4, 16)
        """,
    )

    def check(self, graph, ctx):
        used = _used_parameters(graph)
        model = graph.model
        trainable = {id(p) for p in graph.parameters() if p.requires_grad}
        if not used or not trainable:
            return
        unused = trainable - used
        if not unused:
            return
        reported: set[int] = set()
        for name, module in model.named_modules():
            if not name:
                continue
            own = {id(p) for p in module.parameters() if p.requires_grad}
            if not own or not own <= unused or own <= reported:
                continue
            reported |= own
            yield self._report(graph, name, module, own)
        # Stray parameters registered on a module whose other weights are used.
        for name, param in model.named_parameters():
            if id(param) in unused and id(param) not in reported:
                reported.add(id(param))
                owner = model.get_submodule(name.rpartition(".")[0])
                yield self._report(graph, name, owner, {id(param)}, param=param)

    def _report(self, graph, name: str, module: nn.Module, ids: set[int], param=None):
        model = graph.model
        count = sum(p.numel() for p in model.parameters() if id(p) in ids)
        total = sum(p.numel() for p in model.parameters() if p.requires_grad)
        parent_name, _, attr = name.rpartition(".")
        owner_name = parent_name
        parent = model.get_submodule(parent_name)
        while isinstance(parent, _CONTAINERS) and parent_name:
            # blocks.3 unused: whether the code that owns `blocks` slices or loops over it
            parent_name, _, attr = parent_name.rpartition(".")
            parent = model.get_submodule(parent_name)
        mentioned = _mentioned_outside_init(type(parent), attr)
        if param is not None:
            layer = _called_layer(graph, module) or _stand_in(graph, owner_name, module)
            what = f"parameter {name} ({shape_text(tuple(param.shape))})"
        else:
            layer = _stand_in(graph, name, module)
            what = f"{type(module).__name__} {name}"
        if mentioned:
            message = (f"{what} holds {human(count)} trainable weights that the traced forward did not use; "
                       f"{type(parent).__name__} mentions self.{attr} outside __init__ (a branch this input "
                       "did not take?): a layer built but not used in a configuration costs memory, "
                       "optimizer state and a DistributedDataParallel error")
            severity = Severity.INFO
            fix = Fix(f"build self.{attr} only in the configuration whose forward uses it (under the same "
                      "condition as the branch that calls it), or not at all if no configuration does; "
                      "find_unused_parameters=True in DistributedDataParallel only if it really is used "
                      "in some calls and not others",
                      f"# in {type(parent).__name__}.__init__:\n"
                      f"# if <the condition under which forward uses self.{attr}>:\n"
                      f"#     self.{attr} = ...  # as built now\n"
                      "# else:\n"
                      f"#     self.{attr} = None")
        else:
            message = (f"{what} holds {human(count)} trainable weights ({count / total:.1%} of the model) "
                       "that forward never uses: DistributedDataParallel will stop with 'Expected to have "
                       "finished reduction' and the optimizer keeps state for them")
            severity = None
            fix = _deletion_fix(parent, attr, layer.built_frame if param is None else None)
        return self.finding(
            layer, message,
            evidence={"module": name, "unused_params": count, "share": round(count / total, 4),
                      "mentioned_outside_init": mentioned},
            fix=fix, severity=severity,
        )


def _deletion_fix(parent: nn.Module, attr: str, frame=None) -> Fix:
    kind = type(parent).__name__
    if type(parent).__module__.startswith("torch.nn") and attr == "bias":
        # forward read the layer's weight but never its bias (x @ layer.weight.T)
        if isinstance(parent, nn.modules.conv._ConvNd):
            code = conv_call(parent, bias=False)
        elif isinstance(parent, nn.Linear):
            code = f"nn.Linear({parent.in_features}, {parent.out_features}, bias=False)"
        else:
            code = None
        return Fix(f"build the {kind} without a bias", code)
    built = frame.source().strip() if frame is not None and frame.is_user_code else ""
    if built.startswith(f"self.{attr}"):
        return Fix(f"delete self.{attr} from {kind}.__init__, or use it in forward",
                   f"# {frame.location()}: delete\n{built}")
    return Fix(f"delete self.{attr} from {kind}.__init__, or use it in forward",
               f"# in {kind}.__init__, delete the line that builds it:\n# self.{attr} = ...")


def _used_parameters(graph) -> set[int]:
    used: set[int] = set()
    for layer in graph:
        if layer.kind == Kind.MODULE and layer.module is not None:
            used.update(id(p) for p in parameters_of(layer.module))
        elif layer.kind == Kind.ATTR:
            weight = graph.parameter(layer.qualname)
            if weight is not None:
                used.add(id(weight))
    return used


def _called_layer(graph, module: nn.Module) -> Layer | None:
    return next((l for l in graph if l.kind == Kind.MODULE and l.module is module), None)


def _stand_in(graph, name: str, module: nn.Module) -> Layer:
    """A layer-shaped record for a module forward never calls, pointing at where it was built."""
    return Layer(name=name, index=-1, kind=Kind.MODULE, op=type(module).__name__, qualname=name,
                 module=module, built_frames=getattr(graph, "construction", {}).get(name, ()))


@lru_cache(maxsize=256)
def _mentioned_outside_init(cls: type, attr: str) -> bool:
    """Whether any method of `cls` (or its user-defined bases) other than __init__ reads
    `self.<attr>` or getattr(self, "<attr>")."""
    for klass in cls.__mro__:
        if klass in (nn.Module, object) or klass.__module__.startswith("torch.nn"):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or fn.name == "__init__":
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Attribute) and node.attr == attr and \
                        isinstance(node.value, ast.Name) and node.value.id == "self":
                    return True
                if isinstance(node, ast.Constant) and node.value == attr:
                    return True
    return False
