"""TorchScript (`--engine torchscript`): model.ts is served only as a function proven equal to a trusted one.

A TorchScript archive is code: nothing in it can be trusted by reading its tensors alone (an
honest model.onnx beside a model.ts that negates the kernel would pass any tensor check). So the
proof does not try to analyse model.ts. It accepts model.ts only if it is provably the same
function as a module the service builds itself:

1. the reference: the kind's export wrapper (torchref.modules, named by service.compute.kinds.ServiceKind.
   reference_class: the very class export scripts into model.ts), built from model.onnx's tensors
   of the same state_dict names (the tensors the ONNX proof read; an exporter may merge equal
   constants into one initializer), then scripted, saved and loaded back here;
2. model.ts's forward, inlined to one TorchScript IR graph (source comments and name mangling
   dropped), must equal the reference's, with no forward hooks anywhere;
3. every parameter and buffer of model.ts must equal the reference's bit for bit (same names,
   dtypes, shapes and bytes), and every other attribute that forward reads must be equal;
4. the reference's tensors must satisfy the kind's rules (service.compute.kinds.ServiceKind.reference_rules),
   which make that architecture monotone by construction, whatever the ONNX graph around them.

Anything else is refused, naming what differs. torch and torchref are imported lazily, here only:
the ONNX serving path never loads them (tests/test_layering.py).
"""

from __future__ import annotations

import io
import re
from typing import Any, Callable, Mapping

import numpy as np

from contract.manifest import Manifest

_SOURCE_COMMENT = re.compile(r"\s+#.*$", re.MULTILINE)
_MANGLE = re.compile(r"___torch_mangle_\d+\.")


class TorchScriptRefused(ValueError):
    """model.ts is not provably the proven function; the message says what differs."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("model.ts is refused: it is not provably the function proven on model.onnx "
                         "(the service serves TorchScript only as its own reference module with the proven tensors; "
                         "docs/service.md): " + "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))


def normalized_graph(module: Any) -> str:
    """forward's inlined IR with what differs between two honest saves removed (source lines, mangling)."""
    return _MANGLE.sub("", _SOURCE_COMMENT.sub("", str(module.inlined_graph))).strip()


def _read_attributes(graph: Any) -> set[str]:
    return {node.s("name") for node in graph.nodes() if node.kind() == "prim::GetAttr"}


def _tensors(module: Any) -> dict[str, Any]:
    named = dict(module.named_buffers())
    named.update(dict(module.named_parameters()))
    return named


def _same_bits(a: Any, b: Any) -> bool:
    a, b = a.detach().cpu().contiguous(), b.detach().cpu().contiguous()
    return a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape) and a.numpy().tobytes() == b.numpy().tobytes()


def compare_modules(candidate: Any, reference: Any) -> list[str]:
    """What differs between two loaded ScriptModules (empty: the same function)."""
    import torch

    problems: list[str] = []
    for name, module in candidate.named_modules():
        if module._c._get_forward_hooks() or module._c._get_forward_pre_hooks():
            problems.append(f"module {name or '(root)'!r} has forward hooks")
    if normalized_graph(candidate) != normalized_graph(reference):
        problems.append("its forward graph (TorchScript IR) differs from the reference's")
    mine, theirs = _tensors(candidate), _tensors(reference)
    if set(mine) != set(theirs):
        extra, missing = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
        problems.append(f"its tensors differ from the reference's: extra {extra}, missing {missing}")
    for name in sorted(set(mine) & set(theirs)):
        a, b = mine[name], theirs[name]
        if a.dtype != b.dtype or tuple(a.shape) != tuple(b.shape):
            problems.append(f"tensor {name!r} is {a.dtype} {list(a.shape)}, the proven one {b.dtype} {list(b.shape)}")
        elif not _same_bits(a, b):
            differ = int((a.detach().cpu().reshape(-1) != b.detach().cpu().reshape(-1)).sum())
            problems.append(f"tensor {name!r} differs from the proven tensor in {differ} element(s)")
    # Non-tensor attributes that forward reads (ints, floats, flags) must be equal too.
    read = _read_attributes(candidate.inlined_graph)
    ref_modules = dict(reference.named_modules())
    for name, module in candidate.named_modules():
        other = ref_modules.get(name)
        if other is None:
            problems.append(f"module {name!r} has no counterpart in the reference")
            continue
        for attribute in sorted(read):
            if not module._c.hasattr(attribute) or not other._c.hasattr(attribute):
                continue
            a, b = module._c.getattr(attribute), other._c.getattr(attribute)
            if isinstance(a, (torch.Tensor, torch._C.ScriptObject)) or isinstance(b, (torch.Tensor, torch._C.ScriptObject)):
                continue  # tensors compared above; submodules compared by name
            if a != b:
                problems.append(f"attribute {(name + '.' if name else '') + attribute!r} is {a!r}, the reference's {b!r}")
    return problems


def _load(data: bytes) -> Any:
    import torch

    module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    return module.eval()


def _with_shared_initializers(candidate: Mapping[str, Any], onnx_tensors: Mapping[str, np.ndarray],
                              consumed: set[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """model.onnx's tensors, plus each model.ts tensor name that the ONNX exporter merged into another
    initializer holding the same values (its optimizer keeps one initializer for equal constants: an
    all-ones feature_scale and direction_sign become one). The alias is taken only when exactly that
    value (dtype, shape, bytes) is a tensor some ONNX node reads, so the reference is still built
    from the proven graph's tensors only, and the kind's rules are then checked on it as on any other.
    Returns (tensors by name, {model.ts name: ONNX name})."""
    view = dict(onnx_tensors)
    aliases: dict[str, str] = {}
    for name, tensor in candidate.items():
        if name in view:
            continue
        values = tensor.detach().cpu().contiguous().numpy()
        for other in sorted(consumed):
            stored = onnx_tensors.get(other)
            if (stored is not None and stored.dtype == values.dtype and stored.shape == values.shape
                    and stored.tobytes() == values.tobytes()):
                view[name] = stored
                aliases[name] = other
                break
    return view, aliases


def reference_module(manifest: Manifest, tensors: Mapping[str, np.ndarray]) -> Any:
    """The trusted module of the manifest's kind with these tensors, scripted, saved and loaded back."""
    import torch

    from service.compute.kinds import service_kind
    from torchref import modules  # the one definition of what export scripts into model.ts

    module = getattr(modules, service_kind(manifest.kind).reference_class).from_manifest(manifest, tensors)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buffer)
    return _load(buffer.getvalue())


def prove_torchscript(data: bytes, manifest: Manifest, onnx_tensors: Mapping[str, np.ndarray],
                      consumed: set[str], rules: Callable[[dict[str, np.ndarray]], list[str]]) -> dict[str, Any]:
    """Accept `data` (model.ts, the hashed bytes) or raise TorchScriptRefused naming what differs.

    `onnx_tensors`: model.onnx's tensors by name; `consumed`: the names some node reads;
    `rules(tensors) -> problems`: the kind's rules on the reference's tensors.
    """
    import warnings

    with warnings.catch_warnings():  # torch 2.13 deprecates torch.jit; the engine still serves it
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            candidate = _load(data)
        except Exception as exc:  # a corrupt archive
            raise TorchScriptRefused([f"torch.jit cannot load it: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"]) from exc
        names = sorted(_tensors(candidate))
        onnx_tensors, aliases = _with_shared_initializers(_tensors(candidate), onnx_tensors, consumed)
        missing = [name for name in names if name not in onnx_tensors]
        unused = [name for name in names if name in onnx_tensors and name not in consumed and name not in aliases]
        if missing or unused:
            raise TorchScriptRefused(
                ([f"model.onnx has no tensor {missing} (the reference takes every tensor from the proven graph)"] if missing else [])
                + ([f"model.onnx holds {unused} but no node reads them"] if unused else []))
        try:
            reference = reference_module(manifest, onnx_tensors)
        except (KeyError, ValueError, RuntimeError, IndexError) as exc:
            raise TorchScriptRefused([f"the reference {manifest.kind} cannot be built from model.onnx's tensors: {exc}"]) from exc
        problems = compare_modules(candidate, reference)
        if problems:
            raise TorchScriptRefused(problems)
        tensors = {name: tensor.detach().cpu().numpy() for name, tensor in _tensors(reference).items()}
        problems = rules(tensors)
        if problems:
            raise TorchScriptRefused([f"the proven tensors break the {manifest.kind}'s rules: {p}" for p in problems])
    return {"reference": f"torchref.modules {manifest.kind} wrapper", "tensors": names, "shared_initializers": aliases}
