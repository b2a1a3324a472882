"""`credex catalog show|validate`: look at the catalogue and check a file of records against it.

Exit codes: 0 ok, 2 invalid input (an unknown item, an unreadable file, any invalid record).
Error lines carry the line number, field id, code and the catalogue's message, which never
contains an ID number or a person's name.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from node.cli import app
from node.cli.common import JsonOption, china_today, console, err_console, print_json

if TYPE_CHECKING:
    import catalog

catalog_app = typer.Typer(
    name="catalog",
    help="Show the unified catalogue and validate records against it.",
    no_args_is_help=True,
)
app.add_typer(catalog_app, name="catalog")

CatalogOption = Annotated[
    Path | None,
    typer.Option(
        "--catalog",
        help="Catalogue TOML file to use instead of the shipped one.",
        show_default=False,
    ),
]


def _load(path: Path | None) -> catalog.Catalog:
    import catalog

    try:
        return catalog.load_catalog(path) if path is not None else catalog.default_catalog()
    except catalog.CatalogError as error:
        err_console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        raise typer.Exit(2) from None


def _item_summary(item: catalog.Item) -> dict[str, Any]:
    return {
        "id": item.id,
        "name_zh": item.name_zh,
        "name_en": item.name_en,
        "category": item.category,
        "subject_kinds": sorted(item.subject_kinds),
        "share_type": item.share_type,
        "disclosure_modes": sorted(item.disclosure_modes),
        "info_nature": item.info_nature,
        "severity_rule": item.severity_rule,
        "legal_basis": item.legal_basis,
        "provider": item.provider,
        "natural_key": list(item.natural_key),
        "personal": item.personal,
        "decided_on": item.decided_on_field,
        "max_disclosure_months": item.max_disclosure_months,
        "record_checks": list(item.record_checks),
        "linked_id_fields": list(item.linked_id_fields),
    }


def _field_dict(f: catalog.Field) -> dict[str, Any]:
    return {
        "id": f.id,
        "name_zh": f.name_zh,
        "kind": f.kind,
        "max_len": f.max_len,
        "precision": f.precision,
        "scale": f.scale,
        "required": f.required,
        "code_table": f.code_table,
        "sensitivity": f.sensitivity,
        "unit": f.unit,
        "check": f.check,
    }


def _type_text(f: catalog.Field) -> str:
    if f.kind == "C":
        return f"C..{f.max_len}"
    if f.kind == "N":
        return f"N..{f.precision},{f.scale}" + (f" {f.unit}" if f.unit else "")
    if f.code_table:
        return f"{f.kind}:{f.code_table}"
    return f.kind


@catalog_app.command("show")
def show(
    item: Annotated[str | None, typer.Argument(help="Item id; all items when omitted.")] = None,
    as_json: JsonOption = False,
    catalog_file: CatalogOption = None,
) -> None:
    """Show the catalogue's items, or one item with its fields."""
    import catalog

    cat = _load(catalog_file)
    if item is None:
        if as_json:
            print_json(
                {
                    "version": cat.version,
                    "items": [_item_summary(i) for i in cat.items.values()],
                    "code_tables": {
                        t.id: {"name_zh": t.name_zh, "labels": list(t.labels())}
                        for t in cat.code_tables.values()
                    },
                }
            )
            return
        table = Table(title=f"credex catalogue {cat.version}")
        table.add_column("item", no_wrap=True)
        for column in ("名称", "category", "subjects", "share", "disclosure", "fields"):
            table.add_column(column)
        for i in cat.items.values():
            table.add_row(
                i.id,
                i.name_zh,
                i.category,
                ", ".join(sorted(i.subject_kinds)),
                i.share_type,
                ", ".join(sorted(i.disclosure_modes)) or "-",
                str(len(i.fields)),
            )
        console.print(table)
        return
    try:
        chosen = cat.item(item)
    except catalog.UnknownItem as error:
        err_console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        raise typer.Exit(2) from None
    if as_json:
        print_json(
            {
                "version": cat.version,
                **_item_summary(chosen),
                "fields": [_field_dict(f) for f in chosen.fields],
            }
        )
        return
    console.print(
        f"[bold]{chosen.id}[/] {chosen.name_zh} ({chosen.name_en}), catalogue {cat.version}\n"
        f"category {chosen.category}; subjects {', '.join(sorted(chosen.subject_kinds))}; "
        f"share {chosen.share_type}; disclosure "
        f"{', '.join(sorted(chosen.disclosure_modes)) or '-'}; severity {chosen.severity_rule}\n"
        f"legal basis: {chosen.legal_basis}\nprovider: {chosen.provider}",
        highlight=False,
    )
    table = Table()
    for column in ("field", "名称", "type", "required", "sensitivity"):
        table.add_column(column)
    for f in chosen.fields:
        table.add_row(f.id, f.name_zh, _type_text(f), f.required, f.sensitivity)
    console.print(table)


def _row_values(row: object) -> dict[str, str | None] | str:
    """Turn one JSON object into field values, or return why it cannot be one."""
    if not isinstance(row, dict):
        return "line is not a JSON object"
    values: dict[str, str | None] = {}
    for key, value in row.items():
        if value is None or isinstance(value, str):
            values[key] = value
        elif isinstance(value, bool):
            values[key] = "true" if value else "false"
        elif isinstance(value, int | float):
            values[key] = str(value)
        else:
            return f"field {key}: value is not a string, number or boolean"
    return values


@catalog_app.command("validate")
def validate(
    file: Annotated[Path, typer.Argument(help="JSON Lines file, one record object per line.")],
    item: Annotated[str, typer.Option("--item", help="Catalogue item id of the records.")],
    as_json: JsonOption = False,
    today: Annotated[
        str | None,
        typer.Option(
            "--today", help="Validate as of this date (YYYY-MM-DD); default today (UTC+8)."
        ),
    ] = None,
    catalog_file: CatalogOption = None,
) -> None:
    """Validate every record of a JSON Lines file; exit 2 if any is invalid."""
    import catalog

    cat = _load(catalog_file)
    try:
        cat.item(item)
    except catalog.UnknownItem as error:
        err_console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        raise typer.Exit(2) from None
    try:
        as_of = datetime.date.fromisoformat(today) if today else china_today()
    except ValueError:
        err_console.print(f"[bold red]error:[/] --today {escape(repr(today))} is not YYYY-MM-DD")
        raise typer.Exit(2) from None
    try:
        # JSON Lines are separated by "\n" alone (a "\r" before it is dropped below):
        # splitlines() would also break at U+2028, U+0085 ... that JSON strings may hold.
        lines = file.read_text(encoding="utf-8-sig").split("\n")
    except (OSError, UnicodeDecodeError) as error:
        err_console.print(
            f"[bold red]error:[/] cannot read {escape(str(file))}: {escape(str(error))}",
            highlight=False,
        )
        raise typer.Exit(2) from None

    problems: list[dict[str, Any]] = []
    checked = valid = 0
    for number, text in enumerate(lines, start=1):
        line = text.removesuffix("\r")
        if not line.strip():
            continue
        checked += 1
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(
                {"line": number, "field_id": "", "code": "bad_json", "message": error.msg}
            )
            continue
        except RecursionError:
            why = "arrays or objects nested too deeply to read"
            problems.append({"line": number, "field_id": "", "code": "bad_json", "message": why})
            continue
        values = _row_values(row)
        if isinstance(values, str):
            problems.append({"line": number, "field_id": "", "code": "bad_json", "message": values})
            continue
        result = catalog.validate_record(item, values, today=as_of, catalog=cat)
        if result.ok:
            valid += 1
            continue
        problems.extend(
            {"line": number, "field_id": e.field_id, "code": e.code, "message": e.message}
            for e in result.errors
        )

    invalid = checked - valid
    if as_json:
        print_json(
            {
                "item": item,
                "catalog_version": cat.version,
                "checked": checked,
                "valid": valid,
                "invalid": invalid,
                "errors": problems,
            }
        )
    else:
        for p in problems:
            where = f"line {p['line']}" + (f", {p['field_id']}" if p["field_id"] else "")
            console.print(f"{where}: [{p['code']}] {p['message']}", highlight=False, markup=False)
        colour = "green" if invalid == 0 else "red"
        console.print(
            f"[{colour}]{checked} checked, {valid} valid, {invalid} invalid[/] "
            f"(item {escape(item)}, catalogue {escape(cat.version)})",
            highlight=False,
        )
    if invalid:
        raise typer.Exit(2)
