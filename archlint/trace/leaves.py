"""What fx treats as a leaf beyond torch.nn layers: the fx registries libraries keep themselves.

timm registers the modules and functions fx cannot follow (the "same"-padding convs and pools
compute their padding from the input size in Python; window helpers take shapes apart) for its
own feature extractor. Used here, a timm model that fx could otherwise only hand to
torch.export traces at fx speed. timm is read only when the user's code imported it.

Of timm's leaf modules only the torch.nn layers in disguise are taken: a subclass of a torch.nn
convolution or pooling layer with no children (Conv2dSame, MaxPool2dSame), which rules read as
that layer. Its fused norm+act modules (BatchNormAct2d) stay traced: as one leaf, the
activation inside would be invisible and the norm would look unfollowed by one (false A001s);
its blocks stay traced so their layers stay visible.
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


def is_extra_leaf(module: nn.Module, types: tuple[type, ...]) -> bool:
    return type(module) in types and not module._modules
