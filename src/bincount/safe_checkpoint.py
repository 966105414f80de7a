"""The second guard on a checkpoint from a bucket or a job's output: read its pickle, run none of it.

Why by hand: ``torch.load(weights_only=True)`` is the first guard, and its allowlist and its default have
changed between torch releases (the default became ``True`` in 2.6). This check does not depend on them:
it walks the pickle's opcodes with :mod:`pickletools` (which only parses) and refuses any import other
than the few a Lightning checkpoint of tensors and plain containers needs, and every opcode that can
reach an import another way (the copyreg extension registry, ``INST``/``OBJ``). No library does this
for torch's zip checkpoints; fickling and picklescan scan for known-bad names, not for an allowlist.
"""

from __future__ import annotations

import pickletools
import zipfile
from pathlib import Path
from typing import Any

# Each import found in the 52 checkpoints the test suite and sweeps wrote (one run per config group),
# and the tensor rebuilders and storage types torch's own weights-only loader allows.
ALLOWED_GLOBALS = frozenset({
    "collections OrderedDict", "torch._utils _rebuild_tensor_v2", "torch._utils _rebuild_parameter",
    "torch Size", "torch device", "_codecs encode",
    *(f"torch {kind}Storage" for kind in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char",
                                          "Byte", "Bool", "ComplexFloat", "ComplexDouble")),
    *(f"torch {dtype}" for dtype in ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16",
                                     "int8", "uint8", "bool")),
})
REFUSED_OPCODES = frozenset({"INST", "OBJ", "EXT1", "EXT2", "EXT4"})  # imports that no GLOBAL names
STRING_PUSHES = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"})
MEMO_PUTS = frozenset({"BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"})  # they leave the stack as it is
MAX_PICKLE_BYTES = 64 << 20  # the structure only: tensors are separate members of the zip


class UnsafeCheckpoint(ValueError):
    """A checkpoint that is not a torch zip of tensors and plain containers."""


def pickle_imports(data: bytes) -> list[str]:
    """Every ``module name`` the pickle would import, in order; raises on an import it cannot name."""
    found: list[str] = []
    pushed: list[str] = []  # strings pushed since the last op that changed the stack otherwise
    try:
        for op, arg, pos in pickletools.genops(data):
            if op.name in REFUSED_OPCODES:
                raise UnsafeCheckpoint(f"opcode {op.name} at byte {pos} imports by a route this check cannot name")
            if op.name == "GLOBAL":
                found.append(str(arg))
            elif op.name == "STACK_GLOBAL":
                if len(pushed) < 2:
                    raise UnsafeCheckpoint(f"STACK_GLOBAL at byte {pos} takes a name that is not a literal string")
                found.append(f"{pushed[-2]} {pushed[-1]}")
            if op.name in STRING_PUSHES:
                pushed.append(str(arg))
            elif op.name not in MEMO_PUTS:
                pushed = []
    except UnsafeCheckpoint:
        raise
    except ValueError as e:  # pickletools: a truncated or malformed stream
        raise UnsafeCheckpoint(f"the pickle does not parse ({e})") from None
    return found


def check_checkpoint(path: str | Path) -> None:
    """Raise :class:`UnsafeCheckpoint`, naming the file and the import, unless ``path`` is a torch zip
    checkpoint whose pickle imports only :data:`ALLOWED_GLOBALS`."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            pickles = [i for i in z.infolist() if i.filename.rpartition("/")[2] == "data.pkl"]
            if len(pickles) != 1:
                raise UnsafeCheckpoint(f"{path} holds {len(pickles)} data.pkl members, not 1: not a torch checkpoint")
            if pickles[0].file_size > MAX_PICKLE_BYTES:
                raise UnsafeCheckpoint(f"{path}: data.pkl is {pickles[0].file_size:,} bytes, above the "
                                       f"{MAX_PICKLE_BYTES:,} a checkpoint's structure needs; refused unread")
            data = z.read(pickles[0])
    except zipfile.BadZipFile as e:
        raise UnsafeCheckpoint(f"{path} is not a torch zip checkpoint ({e}); the legacy format is refused") from None
    try:
        imports = pickle_imports(data)
    except UnsafeCheckpoint as e:
        raise UnsafeCheckpoint(f"{path}: {e}; refused unread") from None
    bad = sorted(set(imports) - ALLOWED_GLOBALS)
    if bad:
        raise UnsafeCheckpoint(f"{path} would import {bad}; a checkpoint is loaded only if it imports nothing but "
                               f"{sorted(ALLOWED_GLOBALS)} (tensors and plain containers); refused unread")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents on the CPU, after both guards: this module's check, then torch's weights-only load."""
    import torch

    check_checkpoint(path)
    return torch.load(path, map_location="cpu", weights_only=True)
