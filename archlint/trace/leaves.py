"""What fx treats as a leaf beyond torch.nn layers: the fx registries libraries keep themselves.

timm registers the modules and functions fx cannot follow (the "same"-padding convs and pools
compute their padding from the input size in Python; window helpers take shapes apart) for its
own feature extractor. Used here, a timm model that fx could otherwise only hand to
torch.export traces at fx speed. timm is read only when the user's code imported it.

Of timm's leaf modules only the torch.nn layers in disguise are taken: a subclass of a torch.nn
convolution or pooling layer with no children (Conv2dSame, MaxPool2dSame), which rules read as
that layer. Its blocks stay traced so their layers stay visible.

timm's fused norm+act modules (BatchNormAct2d in most of its CNNs) subclass a torch.nn norm and
compute exactly that norm, then call their `drop` and `act` children. Traced through, each is
eleven nodes (an assert on `x.ndim`, four weight reads, the functional norm): two thirds of
an EfficientNet's graph. As one leaf, the activation inside would be invisible and the norm
would look unfollowed by one (false A001s). So each is recorded as what it does: the norm as
a leaf (the module, which rules read as its torch.nn base), then its drop and its act.
"""
from __future__ import annotations

import sys
from typing import Callable

from torch import nn

_LAYER_BASES = (nn.modules.conv._ConvNd, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)


def _timm_registry() -> tuple[set, set]:
    if "timm" not in sys.modules:
        return set(), set()
    for name in ("timm.layers._fx", "timm.models._features_fx", "timm.models.fx_features"):
        registry = sys.modules.get(name)
        if registry is None:
            try:
                __import__(name)
            except Exception:
                continue
            registry = sys.modules[name]
        modules = getattr(registry, "_leaf_modules", None)
        functions = getattr(registry, "_autowrap_functions", None)
        if modules is not None or functions is not None:
            return set(modules or ()), set(functions or ())
    return set(), set()


def leaf_types() -> tuple[type, ...]:
    """Module classes fx should call whole, not trace into."""
    modules, _ = _timm_registry()
    return tuple(m for m in modules if isinstance(m, type) and issubclass(m, _LAYER_BASES))


def autowrap_functions() -> tuple[Callable, ...]:
    """Functions fx should record as one call, not trace into."""
    _, functions = _timm_registry()
    return tuple(f for f in functions if callable(f) and hasattr(f, "__globals__"))


# timm's fused classes whose forward is their torch.nn base's, followed by self.drop and
# self.act. (LayerNormAct2d permutes around its norm, the Fp32 ones cast, SyncBatchNormAct and
# FrozenBatchNormAct2d are not plain torch.nn norms: those stay traced.)
_NORM_ACT = {"BatchNormAct2d": nn.BatchNorm2d, "GroupNormAct": nn.GroupNorm,
             "GroupNorm1Act": nn.GroupNorm, "LayerNormAct": nn.LayerNorm}


def norm_act_types() -> tuple[type, ...]:
    """timm's fused norm+act classes, to be recorded as their norm, drop and act."""
    norm_act = sys.modules.get("timm.layers.norm_act")
    if norm_act is None:
        return ()
    found = []
    for name, base in _NORM_ACT.items():
        cls = getattr(norm_act, name, None)
        if isinstance(cls, type) and issubclass(cls, base):
            found.append(cls)
    return tuple(found)


def is_norm_act(module: nn.Module, types: tuple[type, ...]) -> bool:
    return (type(module) in types and set(module._modules) == {"drop", "act"}
            and not module._forward_hooks and not module._forward_pre_hooks)


def is_extra_leaf(module: nn.Module, types: tuple[type, ...]) -> bool:
    return type(module) in types and not module._modules
