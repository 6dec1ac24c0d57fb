"""Backfill: a marketplace's historical leads through the same queue as webhooks (see engine.py)."""

from connector.backfill.engine import MAX_PASSES, Backfill, mask
from connector.backfill.records import Counts, Job, Progress, Result, Sample, Stop

__all__ = ["MAX_PASSES", "Backfill", "Counts", "Job", "Progress", "Result", "Sample", "Stop", "mask"]
