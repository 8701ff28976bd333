"""Print README's configuration reference from the settings models (the single source).

    python tools/config_reference.py                    # print it
    python tools/config_reference.py --write README.md  # replace the section between the markers
"""

from __future__ import annotations

from pathlib import Path

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


def write_into(readme: Path) -> None:
    text = readme.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    readme.write_text(text[:start] + reference() + text[end:])


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--write"]:
        write_into(Path(sys.argv[2] if len(sys.argv) > 2 else "README.md"))
    else:
        print(reference())
