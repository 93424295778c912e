"""docs/PYTHON.md's reference is rendered from semdb's docstrings and signatures, so it cannot
drift from the code: the test fails when the file differs from what the code renders, or when a
public member has no docstring.

To update it after changing a docstring or a signature:

    python tests/test_python_reference.py      # rewrites the reference part of docs/PYTHON.md

What is rendered: `semdb.open`, every public member of `Database` (in source order), the records
a search takes and returns (`SearchRequest`, `Hit`, `Item`), the errors with their exit codes
and `Codec`'s public face. The text above the reference (an overview with examples) and any
section after it are written by hand.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "PYTHON.md"
BEGIN = (
    "<!-- Rendered from the docstrings by `python tests/test_python_reference.py`: "
    "edit the docstrings, not this part. -->"
)
END = "<!-- End of the rendered reference. -->"
WIDTH = 110  # a signature longer than this puts one parameter per line

# Codec's public face: the rest of its attributes serve semdb's own search and store.
CODEC_MEMBERS = (
    "train",
    "load",
    "from_bytes",
    "encode",
    "decode",
    "scores",
    "entropy_bits",
    "save",
    "to_bytes",
    "bits",
    "code_bytes",
    "id",
    "model_id",
    "query_source",
)


class _Text(str):
    """An annotation kept as source text (`from __future__ import annotations`), shown unquoted."""

    def __repr__(self) -> str:
        return str(self)


def _parameters(obj, drop_first: bool) -> list[str]:
    params = list(inspect.signature(obj).parameters.values())[1 if drop_first else 0 :]
    out, starred = [], False
    for p in params:
        annotation = getattr(p.annotation, "__forward_arg__", p.annotation)  # (a NamedTuple's fields)
        if isinstance(annotation, str):
            p = p.replace(annotation=_Text(annotation))
        if p.kind is p.KEYWORD_ONLY and not starred:
            out.append("*")
        starred = starred or p.kind in (p.KEYWORD_ONLY, p.VAR_POSITIONAL)
        out.append(str(p))
    return out


def signature(name: str, obj, drop_first: bool = False) -> str:
    """`name(parameters) -> return`, one parameter per line when it would be long."""
    ret = inspect.signature(obj).return_annotation
    tail = "" if ret in (inspect.Signature.empty, None, "None") or isinstance(obj, type) else f" -> {ret}"
    params = _parameters(obj, drop_first)
    one_line = f"{name}({', '.join(params)}){tail}"
    if len(one_line) <= WIDTH:
        return one_line
    return f"{name}(\n" + "".join(f"    {p},\n" for p in params) + f"){tail}"


def docstring(obj, what: str) -> str:
    doc = inspect.getdoc(obj)
    generated = isinstance(obj, type) and (doc == obj.__base__.__doc__ or doc.startswith(obj.__name__ + "("))
    if not doc or generated:  # (a record's generated docstring only repeats its fields)
        raise AssertionError(f"{what} has no docstring: write one (what it does, its arguments, what it returns)")
    return doc


def code(text: str) -> str:
    return f"```python\n{text}\n```"


def member_section(owner: str, cls: type, name: str) -> str:
    """One member of a class: a method, class method, static method or property."""
    raw = inspect.getattr_static(cls, name)
    what = f"{cls.__name__}.{name}"
    if isinstance(raw, property):
        return f"#### `{owner}.{name}`\n\n{docstring(raw, what)}"
    if isinstance(raw, (classmethod, staticmethod)):
        func, prefix = raw.__func__, cls.__name__
        drop_first = isinstance(raw, classmethod)
    else:
        func, prefix, drop_first = raw, owner, True
    return (
        f"#### `{prefix}.{name}`\n\n{code(signature(f'{prefix}.{name}', func, drop_first))}\n\n{docstring(func, what)}"
    )


def public_members(cls: type) -> list[str]:
    """The class's own public methods and properties in source order, but for aliases kept for
    earlier code."""
    kinds = (property, classmethod, staticmethod, type(public_members))
    return [
        name
        for name, value in vars(cls).items()
        if not name.startswith("_")
        and isinstance(value, kinds)
        and getattr(getattr(value, "__wrapped__", None), "__name__", name) == name
    ]


def class_section(title: str, cls: type, shown: str, owner: str | None = None, members=(), built=True) -> str:
    """A class: its constructor (or record fields; `built=False`: made by a member instead) and
    docstring, then its members."""
    init = cls if dataclasses.is_dataclass(cls) or hasattr(cls, "_fields") else cls.__init__
    parts = [f"### {title}"]
    if built:
        parts.append(code(signature(shown, init, drop_first=init is not cls)))
    parts.append(docstring(cls, cls.__name__))
    parts += [member_section(owner, cls, name) for name in members]
    return "\n\n".join(parts)


def function_section(title: str, func) -> str:
    return "\n\n".join([f"### {title}", code(signature(title.strip("`"), func)), docstring(func, title)])


def errors_section() -> str:
    from semdb import errors

    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.SemdbError)]
    rows = [
        f"| `semdb.errors.{c.__name__}` | {c.exit_code} | {docstring(c, c.__name__).splitlines()[0]} |" for c in classes
    ]
    head = ["### Errors", "| error | exit code | when |", "|---|---|---|"]
    return head[0] + "\n\n" + "\n".join(head[1:] + rows)


def render() -> str:
    """The reference part of docs/PYTHON.md, markers included."""
    import semdb
    from semdb.store import Item

    sections = [
        function_section("`semdb.open`", semdb.open),
        class_section(
            "`semdb.Database`",
            semdb.Database,
            "semdb.Database",
            "db",
            public_members(semdb.Database),
        ),
        class_section("`semdb.SearchRequest`", semdb.SearchRequest, "semdb.SearchRequest", "request", ("of",), False),
        class_section("`semdb.Hit`", semdb.Hit, "semdb.Hit", "hit", public_members(semdb.Hit)),
        class_section("`semdb.store.Item`", Item, "semdb.store.Item"),
        errors_section(),
        class_section("`semdb.Codec`", semdb.Codec, "semdb.Codec", "codec", CODEC_MEMBERS, False),
    ]
    return "\n\n".join([BEGIN, *sections, END])


def split_doc(text: str) -> tuple[str, str, str]:
    """docs/PYTHON.md as (before the reference, the reference, after it)."""
    start, end = text.find(BEGIN), text.find(END)
    assert 0 <= start < end, f"docs/PYTHON.md has no rendered reference (between {BEGIN!r} and {END!r})"
    return text[:start], text[start : end + len(END)], text[end + len(END) :]


def test_python_reference_is_rendered_from_the_docstrings():
    _, shown, _ = split_doc(DOC.read_text(encoding="utf-8"))
    rendered = render()
    diff = difflib.unified_diff(shown.splitlines(), rendered.splitlines(), "docs/PYTHON.md", "the docstrings", n=1)
    assert shown == rendered, (
        "docs/PYTHON.md's reference differs from semdb's docstrings and signatures: "
        "run `python tests/test_python_reference.py` and commit the result\n" + "\n".join(list(diff)[:30])
    )


def test_hand_written_examples_call_what_exists():
    """The overview's and the other hand-written sections' `db.NAME(...)` and `codec.NAME(...)`
    calls name members that exist, so a renamed method fails here too."""
    import re

    import semdb

    before, _, after = split_doc(DOC.read_text(encoding="utf-8"))
    called = re.findall(r"\b(db|codec|Codec)\.(\w+)\(", before + after)
    missing = [
        f"{obj}.{name}" for obj, name in called if not hasattr(semdb.Database if obj == "db" else semdb.Codec, name)
    ]
    assert called and not missing, f"docs/PYTHON.md calls what does not exist: {missing}"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    before, _, after = split_doc(DOC.read_text(encoding="utf-8"))
    DOC.write_text(before + render() + after, encoding="utf-8")
    print(f"wrote {DOC.relative_to(ROOT)}")
