"""The params reference: the JSON Schema (``evalkit params-schema``) and
``docs/params.md``, both generated from the models."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from .schema import Params



def schema_json() -> str:
    """The JSON Schema of a params file (pydantic's ``model_json_schema`` of
    :class:`Params`), as the text ``evalkit params-schema`` prints and
    ``docs/params.schema.json`` holds. Editors that read JSON Schema (VS Code's YAML
    extension, PyCharm) check a params file against it while it is written."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              **Params.model_json_schema()}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def reference_markdown() -> str:
    """Every params key with its type, default and meaning, as a Markdown table
    (the source of docs/params.md)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            key = f"{prefix}{name}"
            ann = field.annotation
            sub = next((c for c in (ann, *getattr(ann, "__args__", ()))
                        if isinstance(c, type) and issubclass(c, BaseModel)), None)
            if sub is not None and sub is not Params:
                walk(sub, key + ".")
                continue
            if getattr(ann, "__origin__", None) is Literal:
                kind = "one of " + ", ".join(map(str, ann.__args__))
            else:
                kind = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
            default = field.get_default(call_default_factory=True)
            shown = "(required)" if field.is_required() else f"`{json.dumps(default, default=str)}`"
            desc = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{key}` | {kind.replace('|', ' or ')} | {shown} | {desc} |")

    walk(Params, "")
    return "\n".join(lines) + "\n"


REFERENCE_INTRO = (
    "# Params reference\n\n"
    "Every key a params file may hold. Unknown keys, wrong types and bad values are errors "
    "that name the key. Override any key with `--set KEY=VALUE` (dotted keys; the value is "
    "read as YAML, and kept as plain text when YAML would read it as anything but a number, "
    "a boolean, null, text or a bracketed list or mapping: `--set 'title=Plan: 2023'`, "
    "`--set data.date_format=%d/%m/%Y`). "
    "This page is generated from `evalkit/params/` (`make docs`); a test keeps it current. "
    "The same schema as JSON Schema, for editors that check YAML files against one, is "
    "[params.schema.json](params.schema.json) (`evalkit params-schema`); with VS Code's YAML "
    "extension, for instance, a params file whose first line is "
    "`# yaml-language-server: $schema=<path to docs/params.schema.json>` is checked as it "
    "is written.\n\n")


def write_reference(path: str | Path, schema_path: str | Path | None = None) -> None:
    """Write docs/params.md: :data:`REFERENCE_INTRO` followed by :func:`reference_markdown`;
    and, when ``schema_path`` is given, the JSON Schema (:func:`schema_json`) there."""
    Path(path).write_text(REFERENCE_INTRO + reference_markdown())
    if schema_path is not None:
        Path(schema_path).write_text(schema_json())
