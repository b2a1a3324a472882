"""Reading department data and mapping it onto the catalogue (see docs/decisions/0001).

Sources stream rows (CSV in UTF-8 or GB18030, .xlsx, JSON Lines, SQL tables with watermarks);
a TOML mapping turns each row into catalogue field values; the catalogue validates them; every
row ends accepted (with its record key and content hash), rejected (with reasons, for the reject
report) or skipped as unchanged. docs/mapping.md describes the mapping format.
"""

from adapters.check import MappingProblem, check_columns, check_mapping, check_source
from adapters.delimited import CsvSource, detect_encoding
from adapters.errors import AdapterError, MappingError, ReportError, SourceError
from adapters.identity import canonical_json, content_hash, record_key
from adapters.jsonl import JsonlSource
from adapters.mapper import RowProblem, map_row, mapped_columns
from adapters.mapping import FieldSpec, MappingSpec, SourceSpec, load_mapping, parse_mapping
from adapters.progress import RunProgress
from adapters.rejects import CsvRejectWriter, JsonlRejectWriter, RejectWriter, open_reject_writer
from adapters.run import AcceptedRecord, Batch, RejectedRow, Summary, run_mapping
from adapters.source import ResumeState, Source
from adapters.sources import open_source
from adapters.transforms import DATE_FORMATS, TransformFailed, excel_serial_to_date
from adapters.xlsx import XlsxSource

__all__ = [
    "DATE_FORMATS",
    "AcceptedRecord",
    "AdapterError",
    "Batch",
    "CsvRejectWriter",
    "CsvSource",
    "FieldSpec",
    "JsonlRejectWriter",
    "JsonlSource",
    "MappingError",
    "MappingProblem",
    "MappingSpec",
    "RejectWriter",
    "RejectedRow",
    "ReportError",
    "ResumeState",
    "RowProblem",
    "RunProgress",
    "Source",
    "SourceError",
    "SourceSpec",
    "Summary",
    "TransformFailed",
    "XlsxSource",
    "canonical_json",
    "check_columns",
    "check_mapping",
    "check_source",
    "content_hash",
    "detect_encoding",
    "excel_serial_to_date",
    "load_mapping",
    "map_row",
    "mapped_columns",
    "open_reject_writer",
    "open_source",
    "parse_mapping",
    "record_key",
    "run_mapping",
]
