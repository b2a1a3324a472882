"""`credex mapping check`: validate a mapping against the catalogue, then dry-run a sample.

Exit codes: 0 when the mapping is sound (rejected sample rows are findings, not failures),
2 when the mapping is invalid (a problem of severity error, or a mapped column missing from
the source). Source errors (unreadable file, wrong encoding) surface through `node.cli.main`
with exit code 2. Nothing here prints a cell value: the table shows counts, fields and codes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from node.cli import app
from node.cli.common import JsonOption, china_today, console, print_json

if TYPE_CHECKING:
    import adapters

mapping_app = typer.Typer(help="Check mapping files that turn department data into records.")
app.add_typer(mapping_app, name="mapping")


def _problem_dicts(problems: list[adapters.MappingProblem]) -> list[dict[str, str]]:
    return [
        {"key": p.key, "code": p.code, "severity": p.severity, "message": p.message}
        for p in problems
    ]


def _show_problems(problems: list[adapters.MappingProblem]) -> None:
    table = Table(title="mapping problems")
    for column in ("severity", "key", "code", "message"):
        table.add_column(column)
    for p in problems:
        style = "red" if p.is_error else "yellow"
        table.add_row(
            f"[{style}]{escape(p.severity)}[/]", escape(p.key), escape(p.code), escape(p.message)
        )
    console.print(table)


def _show_summary(summary: adapters.Summary, source: str) -> None:
    table = Table(title=f"dry run on {escape(source)}")
    table.add_column("read", justify="right")
    table.add_column("accepted", justify="right")
    table.add_column("rejected", justify="right")
    table.add_row(str(summary.read), str(summary.accepted), str(summary.rejected))
    console.print(table)
    if summary.reasons:
        reasons = Table(title="top reject reasons")
        reasons.add_column("field")
        reasons.add_column("code")
        reasons.add_column("rows", justify="right")
        for (field_id, code), count in summary.reasons.most_common(10):
            reasons.add_row(field_id, code, str(count))
        console.print(reasons)


@mapping_app.command("check")
def check(
    mapping: Annotated[Path, typer.Argument(help="The mapping file (TOML).", show_default=False)],
    sample: Annotated[
        int, typer.Option("--sample", min=0, help="Dry-run the first N rows (0: no dry run).")
    ] = 100,
    catalog_path: Annotated[
        Path | None,
        typer.Option("--catalog", help="A catalogue file (default: the shipped catalogue)."),
    ] = None,
    rejects: Annotated[
        Path | None,
        typer.Option("--rejects", help="Write the sample's reject report (.csv or .jsonl)."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Check MAPPING against the catalogue, then dry-run it on the first rows of its source."""
    import adapters
    import catalog as cat

    if rejects is not None and rejects.suffix not in {".csv", ".jsonl"}:
        raise typer.BadParameter(
            "the reject report must end in .csv or .jsonl", param_hint="--rejects"
        )
    spec = adapters.load_mapping(mapping)
    catalogue = cat.load_catalog(catalog_path) if catalog_path else cat.default_catalog()
    problems = adapters.check_mapping(spec, catalogue)
    result: dict[str, Any] = {"mapping": str(mapping), "item": spec.item}
    if not any(p.is_error for p in problems):
        source = adapters.open_source(spec.source)
        problems += adapters.check_source(spec, source)
    result["problems"] = _problem_dicts(problems)
    invalid = any(p.is_error for p in problems)
    result["ok"] = not invalid
    if invalid:
        if json_output:
            print_json(result)
        else:
            _show_problems(problems)
            console.print("[bold red]the mapping is invalid[/]")
        raise typer.Exit(2)

    summary = adapters.Summary()
    if sample > 0:
        writer = None
        if rejects is not None:
            writer = adapters.open_reject_writer(rejects, adapters.mapped_columns(spec.fields))
            rejects.chmod(0o600)  # before any row is written: reject reports quote personal data
        try:
            for batch in adapters.run_mapping(
                spec, today=china_today(), catalog=catalogue, limit=sample, source=source
            ):
                summary.add(batch)
                if writer is not None:
                    for row in batch.rejected:
                        writer.write(row)
        finally:
            if writer is not None:
                writer.close()
    result["dry_run"] = summary.to_dict()
    if json_output:
        print_json(result)
        return
    if problems:
        _show_problems(problems)
    if sample > 0:
        _show_summary(summary, spec.source.name)
    console.print("[bold green]the mapping is valid[/]")
