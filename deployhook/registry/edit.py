"""Round-trip edits of repos.yml: add or remove one repo, keeping the admin's comments.

ruamel.yaml keeps comments, key order, quotes and indentation. It attaches the comment
lines *above* an entry to the last value of the entry before it, so removing an entry
moves the comments that belong to the next one back where they were (see `_Slot`).
Every edit is validated with `registry.parse` and written atomically under the file's
lock (`atomicfile`): a crash at any point leaves the old file or the new one.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.tokens import CommentToken
from ruamel.yaml.util import load_yaml_guess_indent

from deployhook.errors import RegistryError, UnknownRepo
from deployhook.registry import NAME_RE, Repo, atomicfile, parse

# A `---` document start, after nothing but comments and blank lines.
_DOC_START_RE = re.compile(r"(?:[ \t]*(?:#[^\n]*)?\n)*(---)(?:[ \t]|\n|\Z)")

# Keys in the order `repos add` writes them (the order of docs/registry.md).
KEY_ORDER = (
    "path",
    "branch",
    "remote",
    "source",
    "secret_env",
    "secret_file",
    "compose_files",
    "project_name",
    "services",
    "timeout",
    "health_timeout",
    "rollback",
    "on_local_changes",
)


def _yaml(text: str) -> tuple[YAML, Any]:
    """A round-trip YAML instance set to the file's own indentation, and the document."""
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap the admin's long lines
    yaml.explicit_start = _DOC_START_RE.match(text) is not None
    try:
        _, indent, block_seq_indent = load_yaml_guess_indent(text)
        doc = yaml.load(text)  # again: the guessing loader drops quoting
    except YAMLError as exc:
        raise RegistryError(f"not valid YAML: {exc}") from None
    # With block sequences present, ruamel's guess is the sequence's indent, not the
    # mappings': measure those from the positions of nested keys.
    mapping = _mapping_indent(doc) or (indent if block_seq_indent is None else None) or 2
    if block_seq_indent is None:
        yaml.indent(mapping=mapping, sequence=mapping + 2, offset=2)
    else:
        yaml.indent(mapping=mapping, sequence=indent, offset=block_seq_indent)
    return yaml, doc


def _mapping_indent(node: Any) -> int | None:
    """The indentation of the first block mapping nested in node, from ruamel's positions."""
    if not isinstance(node, CommentedMap) or node.fa.flow_style():
        return None
    for key, value in node.items():
        if isinstance(value, CommentedMap) and len(value) and not value.fa.flow_style():
            step = int(value.lc.key(next(iter(value)))[1]) - int(node.lc.key(key)[1])
            if step > 0:
                return step
        found = _mapping_indent(value)
        if found:
            return found
    return None


def _dump(yaml: YAML, doc: Any, original: str) -> str:
    out = io.StringIO()
    yaml.dump(doc, out)
    # ruamel drops the comments above a `---`: put them back.
    start = _DOC_START_RE.match(original)
    prefix = original[: start.start(1)] if start else ""
    return prefix + out.getvalue()


# -- the comment slot after an entry -------------------------------------------------


@dataclass
class _Slot:
    """Where ruamel keeps the text that follows a node's last line.

    The token's value is the rest of that line (an inline comment, or nothing) up to its
    newline, then every blank and comment line until the next key: the comments *above*
    the next entry live here.
    """

    holder: Any  # the `ca.items` dict
    key: Any
    index: int  # 2 after a mapping value, 0 after a sequence item

    def get(self) -> str:
        entry = self.holder.get(self.key)
        token = entry[self.index] if entry else None
        return str(token.value) if token is not None else "\n"

    def set(self, value: str) -> None:
        entry = self.holder.get(self.key)
        if value == "\n":  # nothing but the line's own newline: no token at all
            if entry:
                entry[self.index] = None
                if not any(entry):
                    del self.holder[self.key]
            return
        token = entry[self.index] if entry else None
        if token is not None:
            token.value = value
            return
        if not entry:
            entry = self.holder[self.key] = [None, None, None, None]
        entry[self.index] = CommentToken(value, CommentMark(0), None)


def _last_slot(node: Any) -> _Slot | None:
    """The slot after the last line of a block mapping or sequence (None if empty)."""
    if isinstance(node, CommentedMap) and len(node) and not node.fa.flow_style():
        key = list(node)[-1]
        value = node[key]
        if _is_block(value):
            return _last_slot(value)
        return _Slot(node.ca.items, key, 2)
    if isinstance(node, CommentedSeq) and len(node) and not node.fa.flow_style():
        index = len(node) - 1
        if _is_block(node[index]):
            return _last_slot(node[index])
        return _Slot(node.ca.items, index, 0)
    return None


def _is_block(value: Any) -> bool:
    return (
        isinstance(value, CommentedMap | CommentedSeq)
        and bool(len(value))
        and not value.fa.flow_style()
    )


def _split(value: str) -> tuple[str, str]:
    """Split a slot into its own line's end (through the newline) and the lines after."""
    head, newline, rest = value.partition("\n")
    return head + newline, rest


# -- building the new entry ------------------------------------------------------------


def build_entry(settings: dict[str, Any]) -> CommentedMap:
    """A repos.yml entry from `repos add` options, lists in flow style ([a, b])."""
    entry = CommentedMap()
    for key in KEY_ORDER:
        if key not in settings or settings[key] is None:
            continue
        value = settings[key]
        if isinstance(value, list | tuple):
            seq = CommentedSeq(value)
            seq.fa.set_flow_style()
            value = seq
        entry[key] = value
    return entry


# -- the edits ---------------------------------------------------------------------------


def add_repo(file: Path, name: str, settings: dict[str, Any]) -> Repo:
    """Add repo `name` to the registry file; return it as the registry will see it."""
    if not NAME_RE.match(name) or name in {".", ".."}:
        raise RegistryError(
            f"{file}: repos.{name}: invalid name: use letters, digits, '.', "
            "'_' and '-', starting with a letter or digit"
        )
    with atomicfile.locked(file) as (real, text):
        parse(text, file=file)  # an already broken file is the admin's to fix first
        new_text = _with_entry(text, name, build_entry(settings), file=file)
        repos = parse(new_text, file=file)
        atomicfile.write(real, new_text)
    return repos[name]


def remove_repo(file: Path, name: str) -> None:
    """Remove repo `name` from the registry file, keeping every other line as it was."""
    with atomicfile.locked(file) as (real, text):
        parse(text, file=file)
        new_text = _without_entry(text, name, file=file)
        parse(new_text, file=file)
        atomicfile.write(real, new_text)


def _with_entry(text: str, name: str, entry: CommentedMap, *, file: Path) -> str:
    yaml, doc = _yaml(text)
    if doc is None:  # empty, or only comments: ruamel would drop them, so append
        tail = "" if not text or text.endswith("\n") else "\n"
        yaml.explicit_start = False  # a `---` in the text already starts the document
        return text + tail + _dump(yaml, {"repos": {name: entry}}, "")
    repos = doc.get("repos")
    if repos is not None and name in repos:
        raise RegistryError(
            f"{file}: repos.{name}: already exists (remove it first, or edit the file)"
        )
    if not isinstance(repos, CommentedMap) or not len(repos):
        fresh = CommentedMap()
        fresh.fa.set_block_style()
        fresh[name] = entry
        parent = doc.ca.items.get("repos")
        token = parent[2] if parent else None
        doc["repos"] = fresh
        if token is not None:  # `repos: {}  # comment`, maybe lines after it
            own_line, after = _split(str(token.value))
            token.value = own_line
            doc.ca.items["repos"] = [None, None, token if own_line != "\n" else None, None]
            fresh.ca.comment = [token, None] if own_line != "\n" else None
            new_slot = _last_slot(entry)
            if new_slot is not None and after:
                new_slot.set("\n" + after)
        return _dump(yaml, doc, text)
    previous = _last_slot(repos)
    repos[name] = entry
    if previous is not None:
        own_line, after = _split(previous.get())
        # Lines after the last entry (a closing comment, the next top-level key's
        # comments) stay after the new one; a blank line separates it if others are.
        separator = "\n" if _entries_spaced(repos) else ""
        previous.set(own_line + separator)
        new_slot = _last_slot(entry)
        if new_slot is not None and after:
            new_slot.set("\n" + after)
    return _dump(yaml, doc, text)


def _entries_spaced(repos: CommentedMap) -> bool:
    """True if the file puts a blank line between its repo entries."""
    names = list(repos)[:-1]
    for name in names[:-1]:
        slot = _last_slot(repos[name])
        if slot is not None and _split(slot.get())[1].startswith("\n"):
            return True
    return False


def _without_entry(text: str, name: str, *, file: Path) -> str:
    yaml, doc = _yaml(text)
    repos = doc.get("repos") if isinstance(doc, CommentedMap) else None
    if not isinstance(repos, CommentedMap) or name not in repos:
        raise UnknownRepo(f"{file}: no repo named {name!r}")
    names = list(repos)
    index = names.index(name)
    own = _last_slot(repos[name])
    after = _split(own.get())[1] if own is not None else ""
    if index > 0:
        previous = _last_slot(repos[names[index - 1]])
        del repos[name]
        if previous is not None:
            # The removed entry's comment lines go with it; those of the next entry stay.
            previous.set(_split(previous.get())[0] + after)
    else:
        del repos[name]
        _set_header(doc, repos, after.lstrip("\n"))
    return _dump(yaml, doc, text)


def _set_header(doc: CommentedMap, repos: CommentedMap, lines: str) -> None:
    """Make `lines` the comment lines between `repos:` and its (new) first entry.

    ruamel keeps them either after the inline comment of the `repos:` line, in one
    token, or (no inline comment) as a list of per-line tokens.
    """
    comment = repos.ca.comment or [None, None]
    inline = comment[0]
    parent = doc.ca.items.setdefault("repos", [None, None, None, None])
    if not len(repos):  # `repos: {}`, then its line's comment and the lines after
        empty = CommentedMap()
        doc["repos"] = empty
        text = (_split(str(inline.value))[0] if inline is not None else "\n") + lines
        if text == "\n":
            del doc.ca.items["repos"]
        else:
            token = inline or CommentToken("", CommentMark(0), None)
            token.value = text
            doc.ca.items["repos"] = [None, None, token, None]
        return
    if inline is not None:
        inline.value = _split(str(inline.value))[0] + lines
        return
    tokens: list[CommentToken] = []
    for line in lines.splitlines():
        if not line.strip() and tokens:
            tokens[-1].value += "\n"
        elif line.strip():
            column = len(line) - len(line.lstrip(" "))
            tokens.append(CommentToken(line.lstrip(" ") + "\n", CommentMark(column), None))
    repos.ca.comment = [None, tokens or None]
    parent[3] = tokens or None
    if not any(parent):
        del doc.ca.items["repos"]
