"""The terminal view: rich tables when rich is installed, aligned plain text otherwise."""

from __future__ import annotations

from typing import TextIO

from ._tables import Table

__all__ = ["render_plain", "render_text"]


def render_text(title: str, lines: list[str], tables: list[Table], out: TextIO) -> None:
    """Write the report to ``out``, with rich if it can be imported (the ``cli`` extra)."""
    try:
        from rich.console import Console  # noqa: PLC0415 - optional: the `cli` extra
        from rich.table import Table as RichTable  # noqa: PLC0415
        from rich.text import Text  # noqa: PLC0415
    except ImportError:
        render_plain(title, lines, tables, out)
        return
    # Piped output gets a wide console rather than rich's 80-column default.
    console = Console(file=out, width=None if out.isatty() else 160, highlight=False, soft_wrap=True)
    console.print(title, style="bold", markup=False)
    for line in lines:
        console.print(line, markup=False)
    for table in tables:
        caption = Text(table.note) if table.note else None
        rich_table = RichTable(title=Text(table.title, style="bold"), title_justify="left", caption=caption)
        for index, column in enumerate(table.columns):
            rich_table.add_column(column, justify="left" if index == 0 else "right", no_wrap=index > 0)
        for row in table.rows:
            # Text, not str: rich would read "[...]" in a tenant name as markup.
            rich_table.add_row(*(Text(cell) for cell in row))
        console.print()
        console.print(rich_table)


def render_plain(title: str, lines: list[str], tables: list[Table], out: TextIO) -> None:
    """Write the report as aligned plain text."""
    out.write(f"{title}\n")
    for line in lines:
        out.write(f"{line}\n")
    for table in tables:
        widths = [len(column) for column in table.columns]
        for row in table.rows:
            widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
        out.write(f"\n{table.title}\n")
        for row in [table.columns, *table.rows]:
            cells = [
                cell.ljust(width) if index == 0 else cell.rjust(width)
                for index, (cell, width) in enumerate(zip(row, widths, strict=True))
            ]
            out.write("  ".join(cells).rstrip() + "\n")
        if table.note:
            out.write(f"({table.note})\n")
