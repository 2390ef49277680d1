"""Leaving the user's objects as they were: what a probe snapshots before a candidate and puts back after.

Example::

    >>> rng = RandomState.capture()             # Python, NumPy, torch (CPU and CUDA), Keras's seed
    >>> kept = ModuleState.capture(model)       # a torch module: weights, dtypes, devices, modes, attributes
    >>> ...                                     # a candidate trains a few steps
    >>> kept.restore(); rng.restore()

Only libraries already imported are touched: nothing here imports torch, NumPy or Keras itself.
"""

from __future__ import annotations

import copy
import random
import sys
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RandomState:
    """The random generators' states: Python's, NumPy's global one, torch's (CPU, every initialised
    CUDA device) and Keras's global seed generator, each when its library is imported."""

    python: Any = None
    numpy: Any = None
    torch_cpu: Any = None
    torch_cuda: Any = None
    keras_seed: Any = None

    @classmethod
    def capture(cls) -> RandomState:
        state = cls(python=random.getstate())
        if (numpy := sys.modules.get("numpy")) is not None:
            state.numpy = numpy.random.get_state()
        if (torch := sys.modules.get("torch")) is not None:
            state.torch_cpu = torch.get_rng_state()
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                state.torch_cuda = torch.cuda.get_rng_state_all()
        if (generator := _keras_seed_generator()) is not None:
            state.keras_seed = generator.state.numpy().copy()
        return state

    def restore(self) -> None:
        random.setstate(self.python)
        if self.numpy is not None:
            sys.modules["numpy"].random.set_state(self.numpy)
        if self.torch_cpu is not None:
            torch = sys.modules["torch"]
            torch.set_rng_state(self.torch_cpu)
            if self.torch_cuda is not None:
                torch.cuda.set_rng_state_all(self.torch_cuda)
        generator = _keras_seed_generator()
        if generator is not None and self.keras_seed is not None:
            generator.state.assign(self.keras_seed)


def _keras_seed_generator() -> Any:
    """Keras's global ``SeedGenerator`` when Keras is imported and one exists (else None)."""
    if "keras" not in sys.modules:
        return None
    try:
        from keras.src.backend.common import global_state

        return global_state.get_global_attribute("global_seed_generator")
    except Exception:
        return None


@dataclass
class ModuleState:
    """A torch module tree as it was: every parameter's and buffer's values, dtype, device and
    ``requires_grad`` (the same tensor objects are given them back, so optimizers still hold them),
    their gradients, each submodule's train/eval mode, attributes (a patched ``forward``, a trainer reference) and hooks."""

    tensors: list[tuple[Any, Any, Any, Any, bool, Any]] = field(default_factory=list)
    modules: list[tuple[Any, bool, dict, dict]] = field(default_factory=list)

    @classmethod
    def capture(cls, module: Any) -> ModuleState:
        state = cls()
        seen: set[int] = set()
        for tensor in [*module.parameters(), *module.buffers()]:
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            saved = tensor.detach().to("cpu", copy=True)
            grad = tensor.grad.detach().to("cpu", copy=True) if tensor.grad is not None else None
            state.tensors.append((tensor, saved, tensor.dtype, tensor.device, tensor.requires_grad, grad))
        for m in module.modules():
            hooks = {k: dict(v) for k, v in vars(m).items() if "hooks" in k and isinstance(v, dict)}
            state.modules.append((m, m.training, dict(vars(m)), hooks))
        return state

    def restore(self) -> None:
        torch = sys.modules["torch"]
        with torch.no_grad():
            for tensor, saved, dtype, device, requires_grad, grad in self.tensors:
                tensor.data = saved.to(device=device, dtype=dtype, copy=True)
                tensor.grad = grad.to(device=device, dtype=dtype, copy=True) if grad is not None else None
                if tensor.is_leaf:
                    tensor.requires_grad_(requires_grad)
        for m, training, attributes, hooks in self.modules:
            restore_attributes(m, attributes)
            for name, entries in hooks.items():
                current = vars(m).get(name)
                if isinstance(current, dict):
                    current.clear()
                    current.update(entries)
            m.training = training


def restore_attributes(obj: Any, attributes: dict[str, Any]) -> None:
    """``obj``'s instance attributes back to ``attributes`` (a shallow copy of its ``__dict__``):
    those added since are removed, those rebound are bound back (objects mutated in place are not
    this function's concern)."""
    current = vars(obj)
    for name in [n for n in current if n not in attributes]:
        del current[name]
    for name, value in attributes.items():
        if current.get(name, _MISSING) is not value:
            current[name] = value


_MISSING = object()


@dataclass
class StatefulState:
    """Objects with ``state_dict()``/``load_state_dict()`` (an optimizer, a scheduler) as they were."""

    saved: list[tuple[Any, Any]] = field(default_factory=list)

    @classmethod
    def capture(cls, *objects: Any) -> StatefulState:
        return cls([(o, copy.deepcopy(o.state_dict())) for o in objects if o is not None])

    def restore(self) -> None:
        for obj, state in self.saved:
            obj.load_state_dict(copy.deepcopy(state))


def rebatch_loader(loader: Any, batch_size: int) -> Any:
    """A torch ``DataLoader`` like ``loader`` (its dataset, shuffling, workers, collation) with another
    batch size. ValueError for a loader built on a batch sampler of its own."""
    from torch.utils.data import DataLoader, RandomSampler

    if loader.batch_size is None:
        raise ValueError("the DataLoader has a batch sampler of its own: its batch size cannot be changed")
    return DataLoader(
        loader.dataset, batch_size=batch_size, shuffle=isinstance(loader.sampler, RandomSampler),
        num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
        drop_last=loader.drop_last, timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
        persistent_workers=loader.persistent_workers if loader.num_workers else False,
        generator=loader.generator,
    )
