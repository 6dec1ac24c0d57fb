"""What a finished backfill or reconcile run tells the team through the alerter (connector.alerts).

Kept apart from the engine: the words are for people, the engine only decides when to say them.
Only counts, dates, lead ids and commands: never a lead's name, phone or email.
"""

from __future__ import annotations

from connector.alerts import Alert
from connector.backfill.records import Result

SAMPLE_LEADS = 3  # missing leads named in an alert, each with its `connector explain` command


def backfill_alert(result: Result) -> Alert:
    """Once per backfill run that covered the whole list or stopped on an error."""
    c, source = result.counts, result.job.source
    figures = (f"{c.listed} listed, {c.fetched} fetched, {c.already_present} already present, {c.enqueued} "
               f"enqueued ({c.deliveries} deliveries), {c.failed} failed; {result.requests} API requests")
    if result.error is not None:
        return Alert(f"backfill:{source}", "stopped", "failure", f"Backfill of {source} stopped",
                     f"The backfill of {source} (job {result.job.key}) stopped: {result.error}\n{figures}.\n"
                     f"Fix the cause, then run the same `connector backfill --source {source} ...` again: it "
                     "resumes from its last saved page. Check: connector status")
    kind = "success" if result.ok else "warning"
    lines = [f"The backfill of {source} (job {result.job.key}) went through the whole list: {figures}."]
    lines += result.warnings
    if result.failed_ids:
        lines.append(f"Leads the API refused: {', '.join(result.failed_ids)}")
    lines.append(f"The worker delivers what was enqueued. Check: connector status; explain a lead: "
                 f"connector explain LEAD_ID --source {source}")
    return Alert(f"backfill:{source}", "done", kind, f"Backfill of {source} finished", "\n".join(lines))


def reconcile_alert(source: str, gap: str, *, error: str | None, missing: list[str]) -> Alert:
    """Once per reconcile run that found leads the webhooks never brought, or could not finish."""
    explain = "\n".join([f"Explain: connector reconcile --source {source} --dry-run (what is missing now) and "
                         "connector status (the last runs)"]
                        + [f"  e.g. connector explain {lead} --source {source}" for lead in missing[:SAMPLE_LEADS]])
    if error is not None:
        return Alert(f"reconcile:{source}", "failed", "failure", f"Reconcile of {source} failed",
                     f"Reconciling {source} with its API could not finish: {error}\n{gap}\n{explain}")
    title = f"{len(missing)} lead{'s' if len(missing) != 1 else ''} from {source} never arrived by webhook"
    return Alert(f"reconcile:{source}", "gap", "warning", title,
                 f"{gap}\nThey go to your destinations like any other lead. Webhooks from {source} may be "
                 f"failing to reach this connector (its webhook URL, an outage, a deploy).\n{explain}")
