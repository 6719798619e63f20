"""Reading a params file: YAML without aliases and within a size limit, ``${env:NAME}``
references, ``--set`` overrides, validation with every error named by its key, and
paths resolved against the file's folder."""
from __future__ import annotations

import copy
import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import ParamsError
from .base import MAX_PARAMS_BYTES, RUN_ID_KEY
from .schema import Params


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            parent = _model_at(e["loc"][:-1])
            allowed = list(parent.model_fields) if parent else []
            near = difflib.get_close_matches(str(e["loc"][-1]), allowed, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            lines.append(f"  {key}: unknown key{hint}; allowed here: "
                         f"{', '.join(allowed) or 'see docs/params.md'}")
        else:
            got = e.get("input")
            shown = f" (got {got!r})" if isinstance(got, (str, int, float, bool)) else ""
            lines.append(f"  {key}: {e['msg']}{shown}")
    return "invalid params:\n" + "\n".join(lines)


def _model_at(loc) -> type[BaseModel] | None:
    model: type[BaseModel] = Params
    for part in loc:
        if isinstance(part, int):      # an item of a list: same model as the list's
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        nxt = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nxt is None:
            return None
        model = nxt
    return model


def apply_overrides(raw: dict, overrides: list[str] | dict | None) -> dict:
    """Apply ``KEY=VALUE`` overrides (dotted keys, YAML values) to a raw params mapping."""
    out = copy.deepcopy(raw)
    if not overrides:
        return out
    items = overrides.items() if isinstance(overrides, dict) else (_split(o) for o in overrides)
    for key, value in items:
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ParamsError(f"--set {key}: '{p}' is not a section, it holds {nxt!r}")
            node = nxt
        node[parts[-1]] = override_value(key, value) if isinstance(value, str) else value
    return out


class _AliasRefused(yaml.composer.ComposerError):
    """An anchor or alias in params YAML (see :class:`_NoAliasLoader`)."""


class _NoAliasLoader(yaml.SafeLoader):
    """YAML's safe loader without anchors and aliases (``&a`` / ``*a``): an alias lets
    a few lines expand to billions of nodes (a "billion laughs" bomb), and params never
    need one."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _AliasRefused(
                None, None, f"alias *{event.anchor} is not allowed in params (write the "
                "value out in full)", event.start_mark)
        event = self.peek_event()
        if getattr(event, "anchor", None):
            raise _AliasRefused(
                None, None, f"anchor &{event.anchor} is not allowed in params (write the "
                "value out in full)", event.start_mark)
        return super().compose_node(parent, index)


def safe_yaml(text: str, where: str):
    """Parse params YAML: safe types only, no anchors or aliases, at most
    ``MAX_PARAMS_BYTES``; a :class:`ParamsError` naming ``where`` otherwise."""
    if len(text) > MAX_PARAMS_BYTES:
        raise ParamsError(f"{where}: {len(text):,} characters, more than params may hold "
                          f"({MAX_PARAMS_BYTES:,})")
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ParamsError(f"{where}: not valid YAML: {err}") from None


def override_value(key: str, text: str) -> Any:
    """The value of ``--set KEY=TEXT``: TEXT read as YAML, else TEXT itself.

    ``100000``, ``true``, ``0.5``, ``null``, ``[a, b]`` and ``{ED: er}`` are read as YAML.
    Text that YAML reads as something else than a scalar or a bracketed list or mapping
    (``Plan: 2023`` would be a mapping, ``- x`` a list), or cannot read at all
    (``%d/%m/%Y``), is kept as the plain string. A value that starts with ``[`` or ``{``
    must be valid YAML: a ParamsError names the key otherwise.

    >>> override_value("title", "Plan: 2023"), override_value("data.members", "2000")
    ('Plan: 2023', 2000)
    """
    if len(text) > MAX_PARAMS_BYTES:
        raise ParamsError(f"--set {key}: {len(text):,} characters, more than params may hold "
                          f"({MAX_PARAMS_BYTES:,})")
    flow = text.lstrip().startswith(("[", "{"))
    try:
        value = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except _AliasRefused as err:
        raise ParamsError(f"--set {key}: {err.problem}") from None
    except yaml.YAMLError as err:
        if flow:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ParamsError(f"--set {key}: {text!r} is not a valid YAML list or mapping "
                              f"({problem}); quote it to pass it as text") from None
        return text
    if isinstance(value, (dict, list)) and not flow:
        return text
    return value


def _split(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ParamsError(f"--set {item!r}: expected KEY=VALUE, e.g. --set data.members=100000")
    key, value = item.split("=", 1)
    if not key.strip():
        raise ParamsError(f"--set {item!r}: the key is empty")
    return key.strip(), value


def validate(raw: dict) -> Params:
    """Validate a raw mapping into :class:`Params`, or raise a ParamsError naming every bad key."""
    if not isinstance(raw, dict):
        raise ParamsError(f"params must be a mapping of keys to values, got {type(raw).__name__}")
    if RUN_ID_KEY in raw:            # params.json of a run: the id of the run that wrote it
        raw = {k: v for k, v in raw.items() if k != RUN_ID_KEY}
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_format_errors(err)) from None


def load(path: str | Path | None = None, overrides: list[str] | dict | None = None,
         base_dir: Path | None = None) -> Params:
    """Read a YAML params file (or start from defaults), apply overrides, validate.

    Relative data paths in the file are resolved against the file's folder.
    """
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ParamsError(f"params file not found: {path}")
        size = path.stat().st_size
        if size > MAX_PARAMS_BYTES:
            raise ParamsError(f"{path}: {size:,} bytes, more than a params file may hold "
                              f"({MAX_PARAMS_BYTES:,}); is it the right file?")
        raw = safe_yaml(path.read_text(), str(path)) or {}
        base_dir = base_dir or path.resolve().parent
    params = validate(expand_env(apply_overrides(raw, overrides)))
    return resolve_paths(params, base_dir) if base_dir else params


_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(raw, _key: str = ""):
    """Replace ``${env:NAME}`` in every string value by the environment variable NAME.

    This keeps secrets (an encryption key, a password) out of params files: write
    ``encryption_key: ${env:PLAN_DB_KEY}``. An unset variable is a ParamsError naming
    the key. Secret values are removed from every output of a run (see
    :func:`evalkit.privacy.redact_params`).
    """
    if isinstance(raw, dict):
        return {k: expand_env(v, f"{_key}.{k}" if _key else str(k)) for k, v in raw.items()}
    if isinstance(raw, list):
        return [expand_env(v, f"{_key}[{i}]") for i, v in enumerate(raw)]
    if isinstance(raw, str):
        missing = [n for n in _ENV_REF.findall(raw) if n not in os.environ]
        if missing:
            raise ParamsError(f"{_key}: environment variable(s) {', '.join(missing)} not set "
                              f"(the params refer to them as ${{env:NAME}})")
        return _ENV_REF.sub(lambda m: os.environ[m.group(1)], raw)
    return raw


def resolve_paths(params: Params, base_dir: Path) -> Params:
    """Make the data paths absolute, relative to ``base_dir`` (the params file's folder)."""
    d = params.data

    def fix(p: str | None) -> str | None:
        if p is None:
            return None
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (base_dir / q).resolve())

    updates: dict[str, Any] = {}
    if d.source == "files":
        updates["tables"] = {k: fix(v) for k, v in d.tables.items()}
    if d.database:
        updates["database"] = fix(d.database)
    if d.person is not None:
        updates["person"] = d.person.model_copy(update={"path": fix(d.person.path)})
    if d.omop is not None and d.omop.exposure_file:
        updates["omop"] = d.omop.model_copy(update={"exposure_file": fix(d.omop.exposure_file)})
    if d.synthea is not None:
        updates["synthea"] = d.synthea.model_copy(update={
            "folder": fix(d.synthea.folder), "exposure_file": fix(d.synthea.exposure_file)})
    if not updates:
        return params
    return params.model_copy(update={"data": d.model_copy(update=updates)})
