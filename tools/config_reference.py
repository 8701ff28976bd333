"""Print README's configuration reference from the settings models (the single source).

    python tools/config_reference.py > /tmp/ref.md   # tests check README.md contains it verbatim
"""

from __future__ import annotations

from pydantic import BaseModel

from facelink.config import Settings

BEGIN = "<!-- config-reference:begin -->"
END = "<!-- config-reference:end -->"


def _default(field) -> str:
    if field.default_factory is not None:
        return "(per user: $XDG_DATA_HOME/facelink/...)"
    value = field.default
    if value is None:
        return "unset"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def reference() -> str:
    lines = [BEGIN]
    for section, field in Settings.model_fields.items():
        model: type[BaseModel] = field.annotation
        lines += ["", f"**[{section}]**", "", "| key | default | env | meaning |", "|---|---|---|---|"]
        for key, f in model.model_fields.items():
            env = f"FACELINK_{section.upper()}__{key.upper()}"
            desc = (f.description or "").replace("|", "\\|")
            lines.append(f"| `{key}` | `{_default(f)}` | `{env}` | {desc} |")
    lines.append(END)
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference())
