"""The run report's "DHIS2 import" section: what publishing did, in the operator's words.

Self-contained (its own data, markdown and metadata) so the run report only holds one
field and appends one section.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from .dhis2_import import ConflictGroup, ImportCounts
from .periods import calendar_order
from .report_metadata import Key
from .target_preflight import Finding


@dataclass
class PublishReport:
    mode: str  # on | dry-run | off
    mode_how: str = ""
    prediction_id: int | None = None
    outcome: str = "not started"  # published | dry run | nothing published | off | failed
    note: str = ""
    targets: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    values: int | None = None
    zeros: int = 0
    org_units: int | None = None
    periods: list[str] = field(default_factory=list)
    by_element_period: dict[tuple[str, str], int] = field(default_factory=dict)
    chunks_total: int = 0
    chunks_written: int = 0
    dry_run: ImportCounts | None = None
    counts: ImportCounts | None = None
    conflicts: list[ConflictGroup] = field(default_factory=list)
    stale_cells: list[str] = field(default_factory=list)  # "dataElement period orgUnit"
    stale_count: int = 0
    stale_deleted: ImportCounts | None = None
    analytics: str = ""

    def metadata(self) -> dict[str, str | int]:
        out: dict[str, str | int] = {Key.PUBLISH_MODE.value: self.mode, Key.PUBLISH_OUTCOME.value: self.outcome}
        if self.values is not None:
            out["publish_values"] = self.values
        if self.counts is not None:
            out.update({f"publish_{k}": v for k, v in self.counts.as_dict().items()})
        out["publish_conflicts"] = sum(g.count for g in self.conflicts)
        out["publish_stale_cells"] = self.stale_count
        out["publish_warnings"] = len(self.warnings) + sum(1 for f in self.findings if f.level == "warning")
        return out


def render_publish_section(p: PublishReport) -> list[str]:
    lines = ["", "## DHIS2 import", ""]
    lines.append(f"- **Mode:** {p.mode}" + (f" ({p.mode_how})" if p.mode_how else ""))
    lines.append(f"- **Outcome:** {p.outcome}" + (f" — {p.note}" if p.note else ""))
    if p.prediction_id is not None:
        lines.append(f"- **Prediction id:** {p.prediction_id}")
    if p.targets:
        lines.append("- **Targets:**")
        lines += [f"  - {t}" for t in p.targets]
    for f in p.findings:
        if f.level != "ok":
            lines.append(f"- **Preflight {f.level}:** {f.message}" + (f" — *fix:* {f.fix}" if f.fix else ""))
    for w in p.warnings:
        lines.append(f"- **Warning:** {w}")
    if p.values is not None:
        lines.append(
            f"- **Values:** {p.values:,} for {p.org_units or 0:,} org units × {len(p.periods)} periods"
            f" ({_periods(p.periods)}) in {p.chunks_total} request(s)"
            + (f"; {p.zeros:,} zeros" if p.zeros else "")
        )
    if p.by_element_period:
        periods = sorted({pe for _, pe in p.by_element_period}, key=calendar_order)
        grid: defaultdict[str, dict[str, int]] = defaultdict(dict)
        for (de, pe), n in p.by_element_period.items():
            grid[de][pe] = n
        lines += ["", "| data element | " + " | ".join(periods) + " |", "|---|" + "---:|" * len(periods)]
        lines += [f"| {de} | " + " | ".join(f"{grid[de].get(pe, 0):,}" for pe in periods) + " |" for de in sorted(grid)]
        lines.append("")
    if p.dry_run is not None:
        lines.append(f"- **Dry run:** {_counts(p.dry_run)}")
    if p.counts is not None:
        lines.append(f"- **Imported:** {_counts(p.counts)}")
        if p.counts.written == 0 and p.counts.ignored:
            lines.append("- **Nothing new:** DHIS2 already held these exact values (published before).")
    if p.chunks_total and p.chunks_written and p.chunks_written < p.chunks_total:
        lines.append(
            f"- **PARTLY WRITTEN:** {p.chunks_written} of {p.chunks_total} requests were imported before the failure; "
            "publish again to complete (values already written are ignored)."
        )
    if p.conflicts:
        lines.append(f"- **Conflicts ({sum(g.count for g in p.conflicts):,}), nothing was written:**")
        for g in p.conflicts:
            shown = "; ".join("`" + e.replace("`", "'") + "`" for e in g.examples)
            lines.append(f"  - **{g.error_code}** × {g.count:,}: e.g. {shown}")
            lines.append(f"    - *fix:* {g.fix}")
    if p.stale_count:
        shown = ", ".join(f"`{c}`" for c in p.stale_cells[:8])
        more = f" … ({p.stale_count:,} in all)" if p.stale_count > len(p.stale_cells[:8]) else ""
        lines.append(f"- **Stale cells** (older values for org units this forecast no longer covers): {shown}{more}")
        if p.stale_deleted is not None:
            lines.append(f"- **Stale cells deleted:** {_counts(p.stale_deleted)}")
        else:
            lines.append(
                "- *To remove them:* set CHAP_SCHEDULER_PUBLISH_DELETE_STALE=true (the DHIS2 user needs "
                "F_DATAVALUE_DELETE); exactly these cells are deleted, after a dry run."
            )
    if p.analytics:
        lines.append(f"- **Analytics:** {p.analytics}")
    return lines


def _counts(c: ImportCounts) -> str:
    return f"imported {c.imported:,}, updated {c.updated:,}, ignored {c.ignored:,}, deleted {c.deleted:,}"


def _periods(periods: list[str], limit: int = 6) -> str:
    return ", ".join(periods) if len(periods) <= limit else f"{periods[0]}..{periods[-1]}"
