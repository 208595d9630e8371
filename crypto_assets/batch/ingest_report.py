"""What minute_raw logs and records about one ingest: a line per source file (one summary line beyond
``MAX_LISTED`` files), the conflicts it kept apart, the written stats, and its materialization metadata."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterLogManager, MetadataValue

from crypto_assets.asset_names import MINUTE_RAW
from crypto_assets.batch.metadata import stats_lines, stats_metadata
from crypto_assets.batch.minute_ingest import IngestResult, SourceReport
from crypto_assets.batch.written_minutes import WrittenMinutes
from crypto_assets.quality import MAX_LISTED, CheckOutcome, Severity


@dataclass(frozen=True)
class IngestFacts:
    """What minute_raw's checks judge: the minutes as written, and how the sources read."""

    written: WrittenMinutes
    result: IngestResult
    unreadable: list[str]  # files that could not be placed or read
    backfilled: bool  # the exchange backfill fills the gaps (minutes_complete then only warns of what is left)


def source_logger(log: DagsterLogManager, files: int) -> Callable[[SourceReport], None]:
    """Logs each file as it is read; beyond ``MAX_LISTED`` files only the skipped ones (see :func:`log_ingest`)."""
    many = files > MAX_LISTED

    def log_source(report: SourceReport) -> None:
        if report.error:
            log.warning(f"skipped {report.error}")
        elif not many:
            log.debug(
                f"read {report.path} ({report.format}): {report.rows:,} rows in window, "
                f"{report.quarantined:,} quarantined"
            )

    return log_source


def log_ingest(log: DagsterLogManager, facts: IngestFacts, symbols: list[str], files: int, months: str) -> None:
    result = facts.result
    if files > MAX_LISTED:
        read = [r for r in result.sources if not r.error]
        log.debug(
            f"read {len(read)} file(s): {sum(r.rows for r in read):,} rows in window, "
            f"{sum(r.quarantined for r in read):,} quarantined"
        )
    if result.conflicts.height:
        log.warning(
            f"{result.conflicts.height:,} conflicting minute version(s) kept in minute_conflicts:\n"
            f"{result.conflict_summary()}"
        )
    for line in stats_lines(facts.written.stats, symbols):
        log.info(f"minute_raw {months} from {files} file(s): {line}")


def sources_clean(facts: IngestFacts) -> CheckOutcome:
    result = facts.result
    return CheckOutcome(
        not facts.unreadable and result.quarantined == 0 and result.conflicts.height == 0,
        "all source files readable, no quarantined rows, no conflicting versions of a minute",
        Severity.WARN,
        {
            "unreadable_files": "\n".join(facts.unreadable) or "none",
            "quarantined_rows": result.quarantined,
            "conflicts": result.conflicts.height,
            "conflicts_by_source": result.conflict_summary(),
        },
    )


def ingest_metadata(facts: IngestFacts, files: int, synthetic_default: bool, lake: Path) -> dict[str, object]:
    result, written = facts.result, facts.written
    return stats_metadata(written.stats, written.preview, result.minute) | {
        "sources": MetadataValue.int(files),
        "synthetic_default": MetadataValue.bool(synthetic_default),
        "rows_read": MetadataValue.int(result.rows_read),
        "duplicates_removed": MetadataValue.int(result.duplicates_removed),
        "quarantined_rows": MetadataValue.int(result.quarantined),
        "conflicts": MetadataValue.int(result.conflicts.height),
        "conflicts_by_source": MetadataValue.text(result.conflict_summary()),
        "conflicts_path": MetadataValue.path(str(lake / "minute_conflicts")),
        "quarantine_path": MetadataValue.path(str(lake / "quarantine")),
        "path": MetadataValue.path(str(lake / MINUTE_RAW)),
    }
