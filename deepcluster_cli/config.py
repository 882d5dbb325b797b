"""Method configuration: defaults <- preset <- TOML file <- ``--set`` <- explicit options.

Every method has one frozen dataclass ``Config``; this module builds it once from the layers
above, converting strings from the command line by the field's type, and rebuilds it from the
plain dict stored in a checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any

import tomllib

from deepcluster_cli.errors import UsageError

#: numpy's and scikit-learn's seeds are 0 .. 2**32 - 1 (torch takes more, numpy no negatives);
#: the CLI's --seed and the API's random_state, with restarts seed .. seed + N - 1
MAX_SEED = 2**32 - 1


def max_seed(restarts: int = 1) -> int:
    """The largest first seed N restarts may take (they use seed .. seed + N - 1)."""
    return MAX_SEED - (restarts - 1)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def coerce(tp: Any, value: Any, key: str) -> Any:
    """Convert ``value`` (a string from the command line, or a TOML/JSON value) to ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return coerce(inner[0], value, key)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in _TRUE:
                return True
            if s in _FALSE:
                return False
            raise ValueError
        if tp is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value.strip())
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not math.isfinite(number):  # nan > 0 is False: range checks would let it by
                raise UsageError(f"{key}: {value!r} is not a finite number")
            return number
        if tp is str:
            if not isinstance(value, str):
                raise ValueError
            return value
        if origin is tuple:
            item = args[0] if args else str
            if isinstance(value, str):
                items = value.replace(" ", "").split(",")
                if items == [""]:  # `arch=`: no hidden layer
                    items = []
                if "" in items:  # `32,,32` or `32,`: a layer lost in typing, not dropped
                    raise UsageError(f"{key}: {value!r} has an empty item; give numbers A,B,...")
                value = items
            return tuple(coerce(item, v, key) for v in value)
    except (TypeError, ValueError):
        name = getattr(tp, "__name__", str(tp))
        raise UsageError(f"{key}: {value!r} is not a valid {name}") from None
    return value


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """``["alpha=177", "batch_size=111"]`` -> dict; a malformed item is a usage error."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: expected key=value")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"--config {path}: is a folder; give a TOML file")
    if not p.is_file():
        raise UsageError(f"--config {path}: no such file")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--config {path}: not valid TOML ({exc})") from None
    return {k.replace("-", "_"): v for k, v in data.items()}


def _option(key: str) -> str:
    return "--" + key.replace("_", "-")


def option_layers(options: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """One layer per command-line option (``{"lr": 0.1}`` -> ``[("--lr", {"lr": 0.1})]``), so
    :func:`build_config` names the option in its errors."""
    return [(_option(key), {key: value}) for key, value in options.items()]


def build_config(cls: type, layers: list[tuple[str, dict[str, Any]]]) -> Any:
    """Apply ``layers`` (``(source, {key: value})``, later wins) over ``cls``'s defaults.

    A layer from :func:`option_layers` is reported as its option in errors."""
    types_ = _field_types(cls)
    values: dict[str, Any] = {}
    for source, layer in layers:
        for key, value in layer.items():
            key = key.replace("-", "_")
            option = source == _option(key)  # a layer from option_layers
            if key not in types_:
                valid = ", ".join(sorted(types_))
                if option:
                    raise UsageError(
                        f"{source}: not a setting of this method; its settings: {valid}"
                    )
                raise UsageError(f"{source}: unknown setting {key!r}; valid keys: {valid}")
            values[key] = coerce(types_[key], value, source if option else f"{source} {key}")
    cfg = cls(**values)
    check = getattr(cfg, "validate", None)
    if check is not None:
        check()
    check_common_settings(cfg)
    return cfg


def is_learning_rate(name: str) -> bool:
    """Whether setting ``name`` is a learning rate (``lr``, ``pretrain_lr``, ``siamese_lr``,
    vade's ``lr_gmm``; not a schedule's ``lr_decay``/``lr_min``): the one kind of setting a
    ``--resume`` may change, to continue a run whose loss turned NaN at a lower rate."""
    return name in ("lr", "lr_gmm") or name.endswith("_lr")


def _named(*names: str, suffix: str | None = None):
    return lambda name: name in names or (suffix is not None and name.endswith(suffix))


#: Settings every method may have, checked by name after the method's own ``validate``: the
#: optimiser's and the schedule's values that torch or scikit-learn would refuse only when
#: they are used, after the pretraining (an internal error, exit 1), or would take silently
#: (a learning rate whose sign flips every epoch).
_COMMON_RULES = (
    (_named("lr", suffix="_lr"), lambda v: v > 0, "a number > 0"),
    (_named("weight_decay"), lambda v: v >= 0, "a number >= 0"),
    (_named("momentum", "beta1", "beta2"), lambda v: 0 <= v < 1, "a number in [0, 1)"),
    (_named("eps"), lambda v: v > 0, "a number > 0"),
    (_named("lr_decay"), lambda v: v > 0, "a factor > 0"),
    (_named("lr_decay_every"), lambda v: v >= 0, "a number of epochs >= 0 (0: never)"),
    (_named("lr_min"), lambda v: v >= 0, "a number >= 0"),
    (_named("max_iter", suffix="n_init"), lambda v: v >= 1, "a whole number >= 1"),
    (_named(suffix="batch_size"), lambda v: v >= 1, "a whole number >= 1"),
    (_named(suffix="epochs"), lambda v: v >= 0, "a number of epochs >= 0"),
)


def check_common_settings(cfg: Any) -> None:
    """Refuse a value out of range for a setting that :data:`_COMMON_RULES` names."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        for applies, ok, rule in _COMMON_RULES:
            if applies(f.name) and not ok(value):
                raise UsageError(f"setting {f.name}={value}: give {rule}")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain types only (tuples become lists), for checkpoints and JSON."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a config stored by :func:`config_to_dict` (unknown keys are ignored)."""
    types_ = _field_types(cls)
    return cls(**{k: coerce(types_[k], v, k) for k, v in data.items() if k in types_})
