"""The worker's Prometheus metrics, one registry for every agent in the process."""

from __future__ import annotations

from app.metrics import Registry

registry = Registry()
processed = registry.counter("kseg_worker_processed_total", "Events processed, by event kind.")
deduplicated = registry.counter("kseg_worker_deduplicated_total", "Exact repeats of a postback dropped.")
dead_letters = registry.counter("kseg_dead_letters_total", "Dead letters written, by stage and reason.")
segment_messages = registry.counter("kseg_segment_messages_total", "Segment messages queued, by type.")
warehouse_rows = registry.counter("kseg_warehouse_rows_total", "Warehouse rows written.")
segment_requests = registry.counter("kseg_segment_requests_total", "Segment HTTP requests, by status.")
segment_delivered = registry.counter("kseg_segment_delivered_total", "Messages Segment answered 2xx for.")
segment_retries = registry.counter("kseg_segment_retries_total", "Segment request retries.")
lag = registry.gauge("kseg_consumer_lag", "Consumer lag per topic partition (highwater - position).")
