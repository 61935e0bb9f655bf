"""Reading a ``torch.save``-d *whole module* without running any of the file's code.

Some published files are not state dicts but pickled module objects (``torch.save(model)``): the
SaShiMi authors' SC09 classifier is a pickled ``DataParallel(CifarResNeXt)``. ``torch.load(...,
weights_only=True)`` refuses them, and ``weights_only=False`` would let the file import and call
anything (a pickle's REDUCE opcode calls whatever its GLOBAL named, e.g. ``os.system``).

:func:`read_pickled_modules` reads such a file with its own unpickler instead:

- the pickle may name only the classes the caller admits (``allowed``: module path and class name),
  plus the few plain helpers that every torch file uses (``collections.OrderedDict``, ``set``,
  ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter``, the ``torch.*Storage`` type tags
  and ``torch.device``). Any other name (``os.system``, ``builtins.eval``, ``subprocess.Popen``, a
  module class not admitted) stops the reading with :class:`UnsafePickleError` before anything is
  called;
- an admitted class is never imported or instantiated: each object becomes a
  :class:`PickledObject` record (its qualified class name and the attribute dict the pickle
  restores), so no ``__setstate__`` or ``__init__`` of the file's classes runs;
- tensors are rebuilt here from the zip archive's raw storages (``<archive>/data/<key>``, little
  or big endian as its ``byteorder`` record says), on the CPU whatever device tag they carry.

Only torch's zip format (torch >= 1.6; what ``torch.save`` has written since 2020) is read.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import sys
import zipfile
from dataclasses import dataclass, field

import torch

from ..errors import CheckpointError

__all__ = ["PickledObject", "UnsafePickleError", "read_pickled_modules", "module_state_dict"]

# storage type tags as torch pickles them -> element dtype
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class UnsafePickleError(CheckpointError):
    """A pickle that names something outside the admitted classes: refused, nothing of it was run."""


@dataclass
class PickledObject:
    """An object of an admitted class, as the pickle describes it (the class is never imported).

    Attributes:
        cls: its class as ``"module.path.ClassName"``.
        state: the attributes the pickle restores (for an ``nn.Module``: ``_parameters``,
            ``_buffers``, ``_modules``, hyperparameters such as ``eps``), tensors already rebuilt.
    """

    cls: str
    state: dict = field(default_factory=dict)

    def __setstate__(self, state):  # pickle's BUILD: record, never run the real class's code
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise UnsafePickleError(f"{self.cls}: expected an attribute dict in the pickle, got {type(state).__name__}")
        self.state.update(state)


@dataclass(frozen=True)
class _StorageRef:
    dtype: torch.dtype
    key: str
    numel: int


def _record_class(qualname: str):
    """A stand-in class for ``qualname``: calling it or ``cls.__new__(cls)`` makes a record."""

    def new(cls, *args, **kwargs):
        return PickledObject(qualname)

    return type("Pickled", (), {"__new__": new, "qualname": qualname})


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    if not isinstance(storage, torch.Tensor):
        raise UnsafePickleError(f"a tensor in the pickle refers to {type(storage).__name__}, not a storage")
    if len(size) != len(stride):
        raise UnsafePickleError(f"a tensor in the pickle has size {size} but stride {stride}")
    needed = offset + sum((s - 1) * st for s, st in zip(size, stride)) + 1 if all(size) else 0
    if offset < 0 or needed > storage.numel():
        raise UnsafePickleError(f"a tensor in the pickle reaches past its storage ({needed} > {storage.numel()})")
    return storage.as_strided(tuple(size), tuple(stride), offset).clone()


def _rebuild_parameter(data, requires_grad=True, hooks=None, *rest):
    return data  # the values are all we keep


def _device(*args):
    return str(args[0]) if args else "cpu"  # storages are rebuilt on the CPU whatever they were tagged


_HELPERS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set, ("__builtin__", "set"): set,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch", "device"): _device,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, allowed, big_endian: bool, where: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.big_endian, self.where = archive, prefix, big_endian, where
        self.allowed = {tuple(a) for a in allowed}
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in _HELPERS:
            return _HELPERS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if (module, name) in self.allowed:
            return _record_class(f"{module}.{name}")
        raise UnsafePickleError(f"{self.where}: the pickle names {module}.{name}, which is not one of the classes "
                                "this loader admits; refused without running anything (a file that names other "
                                "code may be malicious, or is not the expected file)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise UnsafePickleError(f"{self.where}: unexpected persistent id {pid!r:.80} (expected a torch storage)")
        _, dtype, key, _location, numel = pid
        key = str(key)
        if key not in self.storages:
            try:
                raw = self.archive.read(f"{self.prefix}/data/{key}")
            except KeyError:
                raise CheckpointError(f"{self.where}: storage {key} is missing from the archive") from None
            itemsize = torch.empty((), dtype=dtype).element_size()
            if len(raw) < int(numel) * itemsize:
                raise CheckpointError(f"{self.where}: storage {key} holds {len(raw)} bytes, expected "
                                      f"{int(numel) * itemsize} (a truncated file?)")
            flat = torch.frombuffer(bytearray(raw[:int(numel) * itemsize]), dtype=torch.uint8)
            if self.big_endian and itemsize > 1:
                flat = flat.view(-1, itemsize).flip(1).reshape(-1)
            self.storages[key] = flat.view(dtype) if int(numel) else torch.empty(0, dtype=dtype)
        return self.storages[key]


def read_pickled_modules(path: str | os.PathLike, allowed) -> object:
    """Read a ``torch.save`` zip file whose pickle holds module objects, running none of its code.

    Args:
        path: the file.
        allowed: the admitted classes, as ``(module path, class name)`` pairs, e.g.
            ``("torch.nn.modules.conv", "Conv2d")``. Objects of these classes come back as
            :class:`PickledObject` records; nothing else may appear besides tensors, plain Python
            containers and torch's own rebuild helpers.

    Returns:
        the unpickled top-level object (records, dicts, lists, tensors, numbers, strings).

    Raises:
        UnsafePickleError: the pickle names a class or function that is not admitted (nothing of
            it has run).
        CheckpointError: not a torch zip archive, or a damaged one.
    """
    where = os.fspath(path)
    try:
        archive = zipfile.ZipFile(where)
    except (zipfile.BadZipFile, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise CheckpointError(f"{where}: not a torch zip archive ({e}); only files written by torch >= 1.6 "
                              "(torch.save's zip format) are read") from e
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(f"{where}: expected one <name>/data.pkl in the archive, found {len(pickles)}")
        prefix = pickles[0].split("/")[0]
        try:
            order = archive.read(f"{prefix}/byteorder").decode().strip()
        except KeyError:
            order = "little"  # files from before the record existed were written on little-endian machines
        if order not in ("little", "big"):
            raise CheckpointError(f"{where}: unknown byte order {order!r}")
        unpickler = _Unpickler(archive.read(pickles[0]), archive, prefix, allowed,
                               big_endian=order != sys.byteorder, where=where)
        try:
            return unpickler.load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError, KeyError,
                RecursionError) as e:
            raise CheckpointError(f"{where}: the pickle could not be read ({type(e).__name__}: {e})") from e


def module_state_dict(root: PickledObject, where: str = "file") -> dict:
    """The state dict of a pickled module tree, as ``root.state_dict()`` would give it.

    Args:
        root: a record of an ``nn.Module`` (with ``_parameters``, ``_buffers``, ``_modules``).
        where: how to name the file in errors.

    Returns:
        ``{"a.b.weight": tensor, ...}``: parameters and persistent buffers, depth first in
        registration order, ``None`` entries left out.
    """
    out: dict = {}

    def walk(node, prefix: str):
        if not isinstance(node, PickledObject) or "_modules" not in node.state:
            raise CheckpointError(f"{where}: {prefix or 'the top-level object'} is not a pickled nn.Module "
                                  f"(got {getattr(node, 'cls', type(node).__name__)})")
        skip = node.state.get("_non_persistent_buffers_set") or set()
        for group in ("_parameters", "_buffers"):
            for name, value in (node.state.get(group) or {}).items():
                if value is not None and not (group == "_buffers" and name in skip):
                    if not isinstance(value, torch.Tensor):
                        raise CheckpointError(f"{where}: {prefix}{name} is a {type(value).__name__}, not a tensor")
                    out[prefix + name] = value
        for name, child in (node.state.get("_modules") or {}).items():
            if child is not None:
                walk(child, f"{prefix}{name}.")

    walk(root, "")
    return out
