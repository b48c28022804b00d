"""The loader's Prometheus metrics and readiness, on the registry the loader process creates."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app.metrics import DeadLetterMetrics, RegistryMetrics


class LoaderMetrics(RegistryMetrics):
    """Every path that does not load a record increments a labelled counter here."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.rows = Counter(
            "kseg_warehouse_rows_loaded",
            "Rows written to the warehouse, by table.",
            ["table"],
            registry=registry,
        )
        self.duplicates = Counter(
            "kseg_warehouse_rows_duplicate",
            "Event rows not written because their event_id was already loaded (replay, redelivery).",
            registry=registry,
        )
        #: The shared `kseg_dead_letters_total{stage="warehouse"}` (what the dead-letter alert reads).
        self.all_dead_letters = DeadLetterMetrics.on(registry).total
        self.dead_letters = Counter(
            "kseg_warehouse_dead_letters",
            "Records sent to the dead-letter topic instead of the warehouse, by reason.",
            ["reason"],
            registry=registry,
        )
        self.db_errors = Counter(
            "kseg_warehouse_db_errors",
            "Failed attempts to write a batch (the batch is retried), by error class.",
            ["error"],
            registry=registry,
        )
        self.commit_failures = Counter(
            "kseg_warehouse_offset_commit_failures",
            "Kafka offset commits that failed after the database commit (records will be redelivered).",
            registry=registry,
        )
        self.columns_added = Counter(
            "kseg_warehouse_columns_added", "Columns added to kseg_events automatically.", registry=registry
        )
        self.db_up = Gauge(
            "kseg_warehouse_db_up", "1 while the last database operation succeeded.", registry=registry
        )
        self.lag = Gauge(
            "kseg_warehouse_lag_records",
            "Records in the loader's topics not yet committed to the warehouse, by topic.",
            ["topic"],
            registry=registry,
        )
        self.last_commit = Gauge(
            "kseg_warehouse_last_commit_timestamp_seconds",
            "Unix time of the last database commit.",
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "kseg_warehouse_batch_seconds", "Time to write one batch to the database.", registry=registry
        )
