"""The processing agent's Prometheus counters: what each postback became, and what was held or dropped."""

from __future__ import annotations

from prometheus_client import Counter

processed = Counter("kseg_worker_processed", "Events processed, by event kind.", ["kind"])
parked = Counter("kseg_worker_parked", "Postbacks held until a reinstall's first-touch answer came.")
deduplicated = Counter("kseg_worker_deduplicated", "Exact repeats of a postback dropped.")
segment_messages = Counter("kseg_segment_messages", "Segment messages queued, by type.", ["type"])
warehouse_rows = Counter("kseg_warehouse_rows", "Warehouse rows written to the warehouse topic.")
