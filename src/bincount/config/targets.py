"""A ``_target_`` node's keys and value kinds checked against its target's signature (optimizer, scheduler,
trainer, callbacks, loggers), so a misspelled argument fails before training instead of inside ``instantiate``."""

from __future__ import annotations

import inspect
from typing import Any

from omegaconf import DictConfig

from bincount.config.schema import ConfigError, choices_hint

# Keys of _target_ nodes that bincount consumes itself instead of passing them to the target.
OWN_KEYS = {"scheduler": {"interval", "monitor", "frequency"}}


def check_target_node(key: str, node: Any) -> None:
    """Check a ``_target_`` node's keys against the target's signature (optimizer, scheduler, trainer...)."""
    if not isinstance(node, (dict, DictConfig)) or "_target_" not in node:
        return
    from hydra._internal.utils import _locate  # Hydra's own resolver for _target_ strings

    try:
        target = _locate(node["_target_"])
    except ImportError as err:
        raise ConfigError(f"{key}._target_={node['_target_']!r} cannot be imported: {err}") from None
    params = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    ignored = OWN_KEYS.get(key.split(".")[0], set())
    unknown = [k for k in node if not str(k).startswith("_") and k not in params and k not in ignored]
    if unknown:
        raise ConfigError(f"{key}: {node['_target_']} has no argument {unknown[0]!r}."
                          f"{choices_hint(str(unknown[0]), [p for p in params if p != 'self'])}")
    for name in node:
        if name in params and not str(name).startswith("_"):
            if isinstance(node, DictConfig) and node._get_node(name)._is_interpolation():
                continue  # ${...}: its source is checked where it is typed (trainer.max_epochs, paths.output_dir)
            expected = _expected_kinds(target, params[name])
            value = node[name]
            if expected and not _is_kind(value, expected):
                raise ConfigError(f"{key}.{name}={value!r}: expected {' or '.join(sorted(k.__name__ for k in expected))}"
                                  f" (the argument {name!r} of {node['_target_']})")


# The value kinds a YAML or override can hold; an argument typed with anything else (a Tensor, a callable,
# a class) is not checked here.
_SIMPLE = (bool, int, float, str, list, tuple, dict)


def _expected_kinds(target: Any, param: inspect.Parameter) -> set[type] | None:
    """The kinds of YAML value ``param`` accepts, from its annotation, else from its default; None: not checkable.
    A config holds no Tensor or class instance, so ``Union[float, Tensor]`` means a number here."""
    import collections.abc
    import typing

    hint = param.annotation
    if isinstance(hint, str) or hint is inspect.Parameter.empty:
        try:
            hint = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target).get(param.name, hint)
        except Exception:  # noqa: BLE001 - an annotation that needs names we cannot import
            hint = inspect.Parameter.empty
    if hint is inspect.Parameter.empty or isinstance(hint, str):
        default = param.default
        return {type(default)} if type(default) in (bool, int, float) else None
    kinds = set()
    import types

    for arg in (typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)):
        origin = typing.get_origin(arg) or arg
        if arg is type(None) or origin in _SIMPLE:
            kinds.add(origin)
        elif origin is typing.Literal:
            kinds.update(type(v) for v in typing.get_args(arg))
        elif origin in (collections.abc.Sequence, collections.abc.Iterable, typing.Sequence, typing.Iterable):
            kinds.update((list, tuple))
        elif arg is typing.Any:
            return None
        else:
            kinds.add(object)  # an object the config may build with its own _target_ node
    return kinds - {object} if kinds - {object} else None


def _is_kind(value: Any, kinds: set[type]) -> bool:
    if isinstance(value, (dict, DictConfig)) and "_target_" in value:
        return True  # an object Hydra builds: its own node is checked where it is declared
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int) and (int in kinds or float in kinds):
        return True
    from omegaconf import ListConfig

    if isinstance(value, (list, tuple, ListConfig)):
        return bool(kinds & {list, tuple})
    if isinstance(value, (dict, DictConfig)):
        return dict in kinds
    return any(isinstance(value, k) for k in kinds)
