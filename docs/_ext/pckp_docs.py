"""Pages of the documentation generated from the code (a Sphinx extension; the generators need no Sphinx).

- :func:`config_reference`: the configuration reference, every field of :class:`pckeypoints.config.TrainConfig`
  with its TOML key, command-line flag, type, default and the comment beside it in ``pckeypoints/config.py``
  (the comments are the fields' documentation; they are read from the source, not copied).
- :func:`evidence_pages`: one page per result table in ``experiments/results`` and per model card in
  ``pckeypoints/pretrained``, each including the file itself, so the pages link to the evidence and Sphinx
  checks that every linked file exists.

At ``builder-inited`` both are written under ``docs/_generated/`` (ignored by git) before Sphinx reads the sources.
"""
from __future__ import annotations

import dataclasses
import inspect
import io
import re
import tokenize
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1]
ROOT = DOCS.parent
GENERATED = DOCS / "_generated"

# Fragments written to be pasted elsewhere, not pages of their own.
EVIDENCE_SKIP = {"experiments/results/knn_sigma/README_section.md"}


# ---------------------------------------------------------------------------------------------- config
def field_comments(cls: type) -> dict[str, str]:
    """``{field: comment}`` of a dataclass from its source: the comment lines right above a field and the comment
    at the end of its line, joined."""
    source = inspect.getsource(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    comments, above, result = {}, [], {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(comments.get(number, ""))
            continue
        name = stripped.split(":", 1)[0].strip() if ":" in stripped else ""
        if name in names and line.startswith("    ") and not line.startswith("     ") and name not in result:
            # the field's own line: a trailing comment may sit on a continuation line of the default
            trailing = comments.get(number, "")
            if not trailing and stripped.endswith(("(", ",")):
                end = number
                while end < len(lines) and not comments.get(end) and lines[end].startswith("     "):
                    end += 1
                trailing = comments.get(end, "") if lines[end - 1].startswith("     ") else ""
            result[name] = " ".join(part for part in [*above, trailing] if part)
        above = []
    return result


def _default_text(f: dataclasses.Field) -> str:
    if "default_text" in f.metadata:
        return f.metadata["default_text"]
    if f.default is dataclasses.MISSING:
        return "–"
    if f.default is None:
        return "none"
    if isinstance(f.default, bool):
        return str(f.default).lower()
    if isinstance(f.default, str):
        return f'"{f.default}"'
    return repr(f.default)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def choices(flat: str, mode: str) -> tuple[str, ...] | None:
    """The values a string field accepts, as the config's own check states them (``None``: any string)."""
    import ast

    from pckeypoints.config import TrainConfig
    from pckeypoints.errors import ConfigError

    try:
        TrainConfig.from_fields(mode=mode, **{flat: "\x01not-a-choice"})
    except ConfigError as err:
        found = re.search(r"must be one of (\(.*?\)), got", str(err))
        return tuple(ast.literal_eval(found.group(1))) if found else None
    return None


def config_rows(cls: type, mode: str | None = "supervised") -> list[dict[str, str]]:
    """One row per field of a ``TrainConfig`` section class: key, flag, type, default, comment."""
    comments = {}
    for base in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):  # inherited fields too
        comments.update(field_comments(base))
    rows = []
    for f in dataclasses.fields(cls):
        flag = f.metadata.get("flag", f.name).replace("_", "-")
        scalar = not any(t in str(f.type) for t in ("list", "dict"))
        comment = comments.get(f.name, "")
        if str(f.type).startswith("str"):
            flat, listed = f.metadata.get("flag", f.name), lambda values: ", ".join(f"`{v}`" for v in values)
            by_mode = {m: choices(flat, m) for m in ([mode] if mode else ["supervised", "unsupervised"])}
            by_mode = {m: v for m, v in by_mode.items() if v} or {mode: None}
            allowed = set(by_mode.values())
            if allowed == {None}:
                pass
            elif len(allowed) == 1:
                comment = f"one of {listed(allowed.pop())}" + (f"; {comment}" if comment else "")
            else:
                comment = "; ".join(f"{m}: one of {listed(v)}" for m, v in by_mode.items()) + \
                    (f"; {comment}" if comment else "")
        rows.append({"key": f.name, "flag": f"--{flag}" if scalar else "– (set from the data)",
                     "type": str(f.type).replace("|", "or"), "default": _default_text(f),
                     "comment": comment})
    return rows


def _table(rows: list[dict[str, str]]) -> list[str]:
    out = ["| key | flag | type | default | meaning |", "|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| `{r['key']}` | `{r['flag']}` | {_cell(r['type'])} | `{_cell(r['default'])}` | "
                   f"{_cell(r['comment'])} |" if r["flag"].startswith("--") else
                   f"| `{r['key']}` | {r['flag']} | {_cell(r['type'])} | `{_cell(r['default'])}` | "
                   f"{_cell(r['comment'])} |")
    return out


def _doc(cls: type) -> str:
    """The class docstring as one Markdown paragraph, without its leading ``[section]:``."""
    text = " ".join(inspect.getdoc(cls).split()) if cls.__doc__ else ""
    text = re.sub(r"^``\[\w+\]``: ", "", text)
    text = re.sub(r":(\w+):`", r"{\1}`", text)  # reST roles as MyST roles
    return text[:1].upper() + text[1:]


def config_reference() -> str:
    """The configuration reference as MyST Markdown: ``mode`` and a table per section of
    :class:`~pckeypoints.config.TrainConfig`, in the order of its TOML file (``[loss]`` once per mode)."""
    from pckeypoints import config as c

    out = ["(config-fields)=", "## Every field", "",
           "Generated from `pckeypoints/config.py` when the documentation builds: each field's default, and the "
           "comment beside it in the source. The flag is `pckeypoints train`'s.", "",
           "### `mode`", "", "| key | flag | type | default | meaning |", "|---|---|---|---|---|",
           f"| `mode` | `--mode` | str | `\"supervised\"` | one of {', '.join(f'`{m}`' for m in c.MODES)}; "
           "selects the `[loss]` section's fields |", ""]
    for name, cls in c.SECTIONS.items():
        if name == "loss":
            base = {f.name for f in dataclasses.fields(cls)}
            out += [f"### `[loss]`", "", _doc(cls) + " Both modes have these fields:", "",
                    *_table([r for r in config_rows(c.SupervisedLoss, None) if r["key"] in base]), ""]
            for mode, loss in c.LOSSES.items():
                rows = [r for r in config_rows(loss, mode) if r["key"] not in base]
                out += [f"#### `[loss]` of {mode} runs", "", _doc(loss), "", *_table(rows), ""]
            continue
        out += [f"### `[{name}]`", "", _doc(cls), "", *_table(config_rows(cls)), ""]
    return "\n".join(out).replace("``", "`")


# ---------------------------------------------------------------------------------------------- evidence
def evidence_files() -> list[Path]:
    """The result tables and model cards that get a page, relative to the repository."""
    files = sorted(p.relative_to(ROOT) for p in (ROOT / "experiments" / "results").rglob("*.md")
                   if "archive" not in p.parts)
    files += sorted(p.relative_to(ROOT) for p in (ROOT / "pckeypoints" / "pretrained").glob("*.md"))
    return [f for f in files if f.as_posix() not in EVIDENCE_SKIP]


def evidence_page_name(path: Path) -> str:
    """The document name of a file's page: ``evidence/experiments/results/speedrun`` for
    ``experiments/results/speedrun.md``."""
    return "_generated/evidence/" + path.with_suffix("").as_posix()


def evidence_pages() -> dict[str, str]:
    """``{document name: MyST source}`` of the evidence pages and their index."""
    pages = {}
    for path in evidence_files():
        name = evidence_page_name(path)
        up = "../" * name.count("/")
        pages[name] = (f"```{{include}} {up}../{path.as_posix()}\n:relative-images:\n```\n\n"
                       f"*This page is the file `{path.as_posix()}` of the repository.*\n")
    toc = "\n".join(f"{p.as_posix()} <{evidence_page_name(p).removeprefix('_generated/evidence/')}>"
                    for p in evidence_files())  # titled by path: several files share a heading
    pages["_generated/evidence/index"] = (
        "# Evidence files\n\nEvery result table under `experiments/results/` (the archive aside) and every model "
        "card of `pckeypoints/pretrained/`, as written by the experiments.\n\n"
        f"```{{toctree}}\n:maxdepth: 1\n\n{toc}\n```\n")
    return pages


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:  # unchanged files keep their time: no rebuild
        path.write_text(text)


def generate(app=None) -> None:
    """Writes the generated pages under ``docs/_generated/``."""
    _write(GENERATED / "config_fields.md", config_reference() + "\n")
    for name, text in evidence_pages().items():
        _write(DOCS / f"{name}.md", text)


def setup(app):
    app.connect("builder-inited", generate)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
