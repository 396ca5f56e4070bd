"""Folding: every parametrized tensor (torch.nn.utils.parametrize) replaced by its current value, a
plain Parameter of the same name. The one loop for a checkpoint's model (export.core) and a user's
module (export.byom.ModuleSource, on a deep copy so the user's module is left as it was).
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils import parametrize


def fold_parametrizations(model: nn.Module) -> nn.Module:
    """Fold every parametrization of `model`, in place; returns `model`.

    Each parametrized module first gets a class of its own: parametrize gives a module a generated
    class, which a deep copy shares with its original, and removing a parametrization deletes its
    property from that class (folding a copy would otherwise break the original)."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            cls = type(module)
            module.__class__ = type(cls.__name__, cls.__bases__,
                                    {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")})
            for tensor_name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=True)
    return model
