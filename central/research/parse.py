"""The one entry point the store calls: a research ``.mat`` upload in, parsed cells out.

The layout is recognised by structure, never by file name; a file no reader recognises is
refused with what it holds and what was expected, which is what a researcher needs to fix it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from central.research import generic, nasa, severson
from central.research.cells import InvalidMatFileError, Layout, ParsedCell
from central.research.matfile import (
    MAX_ARRAY_BYTES,
    MAX_DECOMPRESSED_BYTES,
    Budget,
    Kind,
    MatNode,
    open_mat,
)

NO_BATTERY_DATA = "No battery data in .mat file"


@dataclass(frozen=True)
class _Reader:
    layout: Layout
    expected: str
    recognise: Callable[[Mapping[str, MatNode]], list[str]]
    read_cells: Callable[[Mapping[str, MatNode], list[str]], list[ParsedCell]]


# Most specific first: a batch struct also has no 'cycle' field, a NASA struct no cycle_index.
_READERS = tuple(
    _Reader(module.LAYOUT, module.EXPECTED, module.recognise, module.read_cells)
    for module in (severson, nasa, generic)
)


def cells_from_variables(
    variables: Mapping[str, MatNode], warnings: tuple[str, ...] = ()
) -> list[ParsedCell]:
    """The cells of the first layout that recognises the variables (pure: no file access)."""
    for reader in _READERS:
        names = reader.recognise(variables)
        if names:
            return reader.read_cells(variables, names)
    raise InvalidMatFileError(NO_BATTERY_DATA, _unrecognised(variables, warnings))


def _unrecognised(variables: Mapping[str, MatNode], warnings: tuple[str, ...]) -> list[str]:
    """What the file holds, what would have been recognised, and what the reader said."""
    if variables:
        found = "; ".join(
            f"{name} ({node.describe()}"
            + (f" with fields {', '.join(node.fields())})" if node.fields() else ")")
            for name, node in variables.items()
        )
        issues = [f"variables found: {found}"]
    else:
        issues = ["the file holds no variables"]
    issues += [
        f"{name} is a {node.describe()}, which only MATLAB can read: save plain structs and "
        "arrays instead (e.g. table2struct)"
        for name, node in variables.items()
        if node.kind is Kind.OBJECT
    ]
    issues += [f"expected {reader.expected}" for reader in _READERS]
    issues += [f"MATLAB reader: {warning}" for warning in warnings]
    return issues


@contextmanager
def open_research_file(
    path: Path,
    *,
    max_decompressed_bytes: int = MAX_DECOMPRESSED_BYTES,
    max_array_bytes: int = MAX_ARRAY_BYTES,
    scratch: BinaryIO | None = None,
) -> Iterator[list[ParsedCell]]:
    """Sniff, open and recognise ``path``; the cells' cycles are readable until the block ends.

    Raises InvalidMatFileError for anything unusable, on entry or while cycles are read. An upload's
    own nominal capacity overrides the layout's: the caller applies it. ``scratch``: as
    ``open_mat`` takes it.
    """
    budget = Budget(max_decompressed_bytes=max_decompressed_bytes, max_array_bytes=max_array_bytes)
    with open_mat(path, budget, scratch=scratch) as contents:
        yield cells_from_variables(contents.variables, contents.warnings)
