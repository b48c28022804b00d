"""The privacy agent: resolves each request's subject, fans it out to every target with a durable status
per target, retries with backoff, and publishes every change as a new revision on `privacy.requests`.

privacy.requests + privacy.work (by request id) → `privacy` agent (+ `privacy-requests` table)
  → privacy.erase-devices / -index / -members (the agents that own kseg's state apply them)
  → Segment Public API, Kochava scrub, the warehouse (deletes + `kseg_privacy_requests`)

A timer wakes due requests through `privacy.work`, so a retry or a status poll happens in the request's own
partition (table writes need its event) and survives restarts: the table is recovered from its changelog.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

from app import topics
from app.kafka import consumer_config, group_positions, read_records
from app.privacy.clients import (
    KOCHAVA_DONE,
    KOCHAVA_FAILED,
    SEGMENT_FINAL,
    KochavaScrub,
    SegmentRegulations,
    TargetError,
)
from app.privacy.metrics import PrivacyMetrics
from app.privacy.records import TARGETS, Covered, PrivacyErase, PrivacyRequest, PrivacyWake, Target
from app.privacy.rules import (
    Configured,
    IndexEntry,
    due,
    entry_from_record,
    failed,
    gone_by,
    index_keys,
    initial_targets,
    resolve,
    set_target,
    suppression_keys,
)
from app.privacy.store import fold
from app.privacy.warehouse import delete_subject, record_request
from app.records import DeadLetter, decode_or_dead_letter, utc_now_iso
from app.runtime.context import WorkerContext
from app.runtime.topics import raw_topic
from app.sections import PrivacySettings
from app.topics import catalogue

log = logging.getLogger(__name__)

TABLE = "privacy-requests"
#: Topics whose records carry a subject's raw ids and expire by time (their retention bounds `kafka_gone_by`).
RAW_ID_TOPICS = (
    topics.RAW,
    topics.LINKS,
    topics.DEVICE_INDEX,
    topics.DEVICE_EVENTS,
    topics.OUTBOX,
    topics.WAREHOUSE,
    topics.DEADLETTER,
    topics.AUDIENCE_CHANGES,
    topics.KOCHAVA_OUTBOX,
)


def retention_hours() -> list[float]:
    """Declared time retention (topics/topics.yaml) of every topic that carries raw ids."""
    specs = {spec.name: spec for spec in catalogue()}
    return [specs[name].retention_hours or 0.0 for name in RAW_ID_TOPICS if name in specs]


class Fanout:
    """What one attempt at each target needs: settings, the HTTP session, the output producer."""

    def __init__(self, ctx: WorkerContext[PrivacySettings]) -> None:
        self.ctx = ctx
        self.settings = settings = ctx.settings
        self.metrics = PrivacyMetrics.on(ctx.registry)
        self._session: aiohttp.ClientSession | None = None
        token = (
            settings.segment_public_api_token.get_secret_value() if settings.segment_public_api_token else ""
        )
        self.segment = (
            SegmentRegulations(settings.segment_public_api_url, token, settings.kseg_privacy_request_timeout)
            if token
            else None
        )
        self.kochava = (
            KochavaScrub(
                settings.kochava_privacy_url.rstrip("/"),
                settings.kochava_account_id or "",
                settings.kochava_app_id or "",
                settings.kochava_privacy_key,
                tuple(settings.privacy_id_types),
                settings.kochava_privacy_status_path,
                settings.kseg_privacy_request_timeout,
            )
            if settings.kochava_privacy_configured
            else None
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def configured(self) -> Configured:
        from app.warehouse.embedded import pgdata_dir, running_url

        s = self.settings
        warehouse = bool(s.kseg_warehouse_url) or running_url(pgdata_dir(s.kseg_data_dir)) is not None
        return Configured(
            segment=self.segment is not None, kochava=self.kochava is not None, warehouse=warehouse
        )

    # ---- resolution ---------------------------------------------------------------------------------
    async def index_entries(self) -> list[IndexEntry]:
        """The whole device index, read from its compacted changelog (every partition, whichever worker
        owns it): a userId's devices are spread over all of them."""
        name = f"{self.settings.kseg_app_id}-identity-devices-changelog"
        latest: dict[bytes, bytes | None] = {}
        for record in await read_records(consumer_config(self.settings), name):
            if record.key is not None:
                latest[record.key] = record.value
        out = []
        for key, value in latest.items():
            if value is None:
                continue
            try:
                data = orjson.loads(value)
            except orjson.JSONDecodeError:
                continue
            if isinstance(data, dict):
                out.append(entry_from_record(key.decode("utf-8", "replace"), data))
        return out

    async def earlier_coverage(self, request: PrivacyRequest) -> Covered:
        """What earlier requests of the same subject covered (an unsuppress after a delete finds no index)."""
        found = Covered()
        mine = set(request.subject.devices.typed())
        records = await read_records(
            consumer_config(self.settings), self.settings.topic(topics.PRIVACY_REQUESTS)
        )
        for other in fold(records).values():
            if other.request_id == request.request_id or not other.resolved:
                continue
            same_user = request.subject.user_id and request.subject.user_id in other.covered.user_ids
            if same_user or mine & set(other.covered.typed_ids):
                for field in Covered.model_fields:
                    values = getattr(found, field)
                    values += [v for v in getattr(other.covered, field) if v not in values]
        return found

    async def resolve(self, request: PrivacyRequest) -> PrivacyRequest:
        covered = resolve(request.subject, await self.index_entries())
        if request.type == "unsuppress":
            earlier = await self.earlier_coverage(request)
            for field in Covered.model_fields:
                values = getattr(covered, field)
                values += [v for v in getattr(earlier, field) if v not in values]
        hours = retention_hours()
        kafka_gone = (
            gone_by(request.received_at, [int(h * 3600 * 1000) for h in hours])
            if request.type == "delete"
            else None
        )
        resolved = request.model_copy(
            update={"covered": covered, "resolved": True, "kafka_gone_by": kafka_gone}
        )
        now = utc_now_iso()
        for name, target in initial_targets(request.type, covered, self.configured()).items():
            resolved = set_target(resolved, name, target, now)
        return resolved

    # ---- targets ------------------------------------------------------------------------------------
    async def attempt(self, name: str, request: PrivacyRequest, target: Target) -> Target:
        """One attempt at one target: its new status (never raises for a target's own failure)."""
        s = self.settings
        now = time.time()
        try:
            new = await getattr(self, f"_{name}")(request, target)
        except TargetError as err:
            self.metrics.attempts.labels(target=name, outcome="failed").inc()
            if not err.retry:
                return target.model_copy(
                    update={
                        "status": "failed",
                        "reason": err.reason,
                        "attempts": target.attempts + 1,
                        "next_attempt_at": None,
                    }
                )
            return failed(
                target, err.reason, now, s.kseg_privacy_retry_seconds, s.kseg_privacy_retry_max_seconds
            )
        except Exception as exc:  # a bug or an outage kseg did not foresee: retried, and said
            log.exception("privacy target %s of %s failed", name, request.request_id)
            self.metrics.attempts.labels(target=name, outcome="failed").inc()
            return failed(
                target,
                f"error: {type(exc).__name__}",
                now,
                s.kseg_privacy_retry_seconds,
                s.kseg_privacy_retry_max_seconds,
            )
        self.metrics.attempts.labels(target=name, outcome=new.status).inc()
        return new

    async def _send(self, topic: str, keys: list[str], request: PrivacyRequest, action: str) -> None:
        full = self.settings.topic(topic)
        await self.ctx.outputs.send_all(
            (full, key.encode(), PrivacyErase(request_id=request.request_id, action=action, key=key).encode())  # type: ignore[arg-type]
            for key in keys
        )

    async def _suppression(self, request: PrivacyRequest, target: Target) -> Target:
        """Every device key of the subject: erased and suppressed (delete), suppressed, or lifted."""
        keys = suppression_keys(request.covered)
        action = {"delete": "erase", "suppress": "suppress", "unsuppress": "unsuppress"}[request.type]
        await self._send(topics.PRIVACY_ERASE_DEVICES, keys, request, action)
        verb = {"erase": "suppressed", "suppress": "suppressed", "unsuppress": "lifted"}[action]
        reason = f"{len(keys)} device keys {verb} (the list holds their SHA-256 only)"
        if not keys:
            reason = "no device key known for this subject"
        return target.model_copy(
            update={
                "status": "done",
                "reason": reason,
                "attempts": target.attempts + 1,
                "next_attempt_at": None,
                "detail": {"device_keys": len(keys)},
            }
        )

    async def _kseg_state(self, request: PrivacyRequest, target: Target) -> Target:
        """Profiles and dedupe marks (with the suppression commands), index entries and SDK anonymousId
        claims, audience memberships (their Audience Exited first): each owner erases with a tombstone."""
        index = index_keys(request.covered)
        members = request.covered.members
        await self._send(topics.PRIVACY_ERASE_INDEX, index, request, "erase")
        await self._send(topics.PRIVACY_ERASE_MEMBERS, members, request, "erase")
        detail = {
            "profiles": len(suppression_keys(request.covered)),
            "index_entries": len(index),
            "audience_members": len(members),
        }
        return target.model_copy(
            update={
                "status": "done",
                "reason": "erase commands durable; each owner applies them in order",
                "attempts": target.attempts + 1,
                "next_attempt_at": None,
                "detail": detail,
            }
        )

    async def _warehouse(self, request: PrivacyRequest, target: Target) -> Target:
        """Delete the subject's rows; done only once the loader has passed everything its topics held
        when the deletion began (rows still in Kafka then would be loaded after the delete), deleting again
        on each check. Until then pending, checked again soon."""
        from app.warehouse.db import WarehouseUnavailable, connect_async, url
        from app.warehouse.loader import PERSONAL_TOPICS

        s = self.settings
        loaded = [s.topic(name) for name in PERSONAL_TOPICS]
        marks = target.detail.get("loader_marks")
        if not isinstance(marks, dict):
            marks, _ = await group_positions(s, s.warehouse_group, loaded)
        try:
            conn = await connect_async(url(self.settings))
        except WarehouseUnavailable as exc:
            raise TargetError(f"warehouse unavailable: {exc}") from exc
        except Exception as exc:
            raise TargetError(f"warehouse unreachable: {type(exc).__name__}") from exc
        try:
            counts = await delete_subject(conn, request.covered)
        finally:
            await conn.close()
        before = target.detail.get("rows")
        if isinstance(before, dict):
            counts = {table: counts.get(table, 0) + int(before.get(table, 0)) for table in {*counts, *before}}
        total = sum(counts.values())
        _, committed = await group_positions(s, s.warehouse_group, loaded)
        behind = sorted(where for where, end in marks.items() if committed.get(where, 0) < int(end))
        if behind:
            return target.model_copy(
                update={
                    "status": "pending",
                    "reason": f"{total} rows deleted; waiting for the warehouse loader to load what Kafka "
                    f"held when the deletion began ({len(behind)} partitions behind), then deleting again",
                    "attempts": target.attempts + 1,
                    "next_attempt_at": time.time() + min(5.0, s.kseg_privacy_retry_seconds),
                    "detail": {"rows": counts, "loader_marks": marks, "loader_behind": behind},
                }
            )
        return target.model_copy(
            update={
                "status": "done",
                "reason": f"{total} rows deleted",
                "attempts": target.attempts + 1,
                "next_attempt_at": None,
                "detail": {"rows": counts},
            }
        )

    async def _segment(self, request: PrivacyRequest, target: Target) -> Target:
        assert self.segment is not None  # not_configured otherwise
        s = self.settings
        regulate_id = target.detail.get("regulate_id")
        if not isinstance(regulate_id, str):
            regulate_id = await self.segment.create(self.session, request.type, request.covered.user_ids)
            return target.model_copy(
                update={
                    "status": "pending",
                    "reason": "regulation created; waiting for Segment",
                    "attempts": target.attempts + 1,
                    "next_attempt_at": time.time() + s.kseg_privacy_retry_seconds,
                    "detail": {
                        **target.detail,
                        "regulate_id": regulate_id,
                        "regulation_type": request.type,
                        "subject_ids": len(request.covered.user_ids),
                    },
                }
            )
        overall, destinations = await self.segment.status(self.session, regulate_id)
        detail = {**target.detail, "overall_status": overall, "destinations": destinations}
        if overall not in SEGMENT_FINAL:
            return target.model_copy(
                update={
                    "status": "pending",
                    "reason": f"Segment: {overall}",
                    "next_attempt_at": time.time() + s.kseg_privacy_retry_seconds,
                    "detail": detail,
                }
            )
        if SEGMENT_FINAL[overall]:
            return target.model_copy(
                update={
                    "status": "done",
                    "reason": f"Segment: {overall}",
                    "next_attempt_at": None,
                    "detail": detail,
                }
            )
        errors = "; ".join(
            f"{d.get('name')}: {d.get('errString')}" for d in destinations if d.get("errString")
        )
        reason = f"Segment: {overall}" + (f" ({errors})" if errors else "")
        return target.model_copy(
            update={"status": "failed", "reason": reason, "next_attempt_at": None, "detail": detail}
        )

    async def _kochava(self, request: PrivacyRequest, target: Target) -> Target:
        assert self.kochava is not None
        s = self.settings
        job_id = target.detail.get("job_id")
        if not isinstance(job_id, str):
            ids = self.kochava.device_ids(request.covered.typed_ids)
            if not ids:
                return target.model_copy(
                    update={
                        "status": "not_applicable",
                        "reason": "no device id of an accepted type (KOCHAVA_PRIVACY_ID_TYPES)",
                        "next_attempt_at": None,
                    }
                )
            job_id, job_status = await self.kochava.scrub(self.session, ids)
            detail = {
                **target.detail,
                "job_id": job_id,
                "job_status": job_status,
                "id_types": sorted({i["id_type"] for i in ids}),
                "ids": len(ids),
            }
            if not s.kochava_privacy_status_path:
                return target.model_copy(
                    update={
                        "status": "done",
                        "reason": f"scrub queued (job {job_id}); no status endpoint configured",
                        "attempts": target.attempts + 1,
                        "next_attempt_at": None,
                        "detail": detail,
                    }
                )
            return target.model_copy(
                update={
                    "status": "pending",
                    "reason": f"scrub {job_status}",
                    "attempts": target.attempts + 1,
                    "next_attempt_at": time.time() + s.kseg_privacy_retry_seconds,
                    "detail": detail,
                }
            )
        job_status = await self.kochava.job_status(self.session, job_id)
        detail = {**target.detail, "job_status": job_status}
        if job_status in KOCHAVA_DONE:
            return target.model_copy(
                update={
                    "status": "done",
                    "reason": f"scrub {job_status}",
                    "next_attempt_at": None,
                    "detail": detail,
                }
            )
        if job_status in KOCHAVA_FAILED:
            return target.model_copy(
                update={
                    "status": "failed",
                    "reason": f"scrub {job_status}",
                    "next_attempt_at": None,
                    "detail": detail,
                }
            )
        return target.model_copy(
            update={
                "status": "pending",
                "reason": f"scrub {job_status}",
                "next_attempt_at": time.time() + s.kseg_privacy_retry_seconds,
                "detail": detail,
            }
        )

    async def _kafka_logs(self, request: PrivacyRequest, target: Target) -> Target:
        reason = f"raw records in Kafka expire by {request.kafka_gone_by} (topic retention)"
        return target.model_copy(
            update={
                "status": "done",
                "reason": reason,
                "attempts": target.attempts + 1,
                "next_attempt_at": None,
                "detail": {"gone_by": request.kafka_gone_by},
            }
        )

    # ---- one pass -----------------------------------------------------------------------------------
    async def work(self, request: PrivacyRequest) -> PrivacyRequest:
        """Resolve (once), then attempt every due target in fan-out order."""
        if not request.resolved:
            request = await self.resolve(request)
        now = time.time()
        for name in TARGETS:
            target = request.targets.get(name)
            if target is None or not due(target, now):
                continue
            request = set_target(request, name, await self.attempt(name, request, target))
        return request

    async def record(self, request: PrivacyRequest) -> None:
        """The warehouse copy of the record (best effort: the topic is the record; the next revision
        retries when the warehouse is down)."""
        from app.warehouse.db import connect_async, url

        try:
            conn = await connect_async(url(self.settings))
        except Exception as exc:  # the warehouse is optional for the record
            log.info("privacy record %s not written to the warehouse: %s", request.request_id, exc)
            return
        try:
            await record_request(conn, request)
        finally:
            await conn.close()


def next_due(request: PrivacyRequest) -> float | None:
    times = [
        t.next_attempt_at
        for t in request.targets.values()
        if t.status in ("pending", "failed") and t.next_attempt_at
    ]
    pending_now = any(t.status == "pending" and t.next_attempt_at is None for t in request.targets.values())
    if pending_now:
        return 0.0
    return min(times) if times else None


def open_ages_days(requests: list[PrivacyRequest], now: datetime) -> list[float]:
    """Age in days of every request not done (the alert's input)."""
    return [
        (now - datetime.fromisoformat(r.received_at.replace("Z", "+00:00"))).total_seconds() / 86400
        for r in requests
        if r.status != "done"
    ]


def register(ctx: WorkerContext[PrivacySettings]) -> None:
    """Declare the `privacy-requests` table, the privacy agent and its wake-up timer."""
    settings, faust_app = ctx.settings, ctx.faust_app
    fanout = Fanout(ctx)
    ctx.closing.add(fanout.close)
    table = faust_app.Table(TABLE, default=None, partitions=settings.kseg_topic_partitions)
    inputs = raw_topic(
        faust_app,
        settings.topic(topics.PRIVACY_REQUESTS),
        settings.topic(topics.PRIVACY_WORK),
        partitions=settings.kseg_topic_partitions,
    )
    requests_topic = settings.topic(topics.PRIVACY_REQUESTS)

    async def save(request: PrivacyRequest) -> None:
        """Publish the next revision (acked), then keep it in the table and the warehouse."""
        stored = table.get(request.request_id)
        revision = (PrivacyRequest.model_validate(stored).revision if stored else request.revision) + 1
        request = request.model_copy(update={"revision": revision})
        await ctx.outputs.send_all([(requests_topic, request.request_id.encode(), request.encode())])
        table[request.request_id] = request.model_dump(mode="json")
        await fanout.record(request)

    async def handle(value: bytes | None) -> None:
        data: Any = None
        with contextlib.suppress(orjson.JSONDecodeError):
            data = orjson.loads(value or b"")
        if not isinstance(data, dict):
            log.warning("privacy agent: a record that is not a JSON object was skipped")
            return
        if data.get("kind") == "privacy_wake":
            wake = decode_or_dead_letter(value, PrivacyWake, stage="identity", reason="invalid_privacy_wake")
            stored = table.get(wake.request_id) if isinstance(wake, PrivacyWake) else None
            if stored is None:
                return
            current = PrivacyRequest.model_validate(stored)
        else:
            request = decode_or_dead_letter(
                value, PrivacyRequest, stage="identity", reason="invalid_privacy_request"
            )
            if isinstance(request, DeadLetter):
                log.warning(
                    "privacy agent: an invalid privacy request record was skipped: %s", request.error[:200]
                )
                return
            stored = table.get(request.request_id)
            if stored is not None:
                current = PrivacyRequest.model_validate(stored)
                if request.revision == 0 and current.revision > 0:
                    await save(
                        current
                    )  # a duplicate submission landed after our revisions: ours stays newest
                return  # our own revision coming back
            if request.revision > 0:
                table[request.request_id] = request.model_dump(mode="json")  # adopt (a migrated table)
                return
            current = request
        if current.status in ("done", "failed") and current.resolved and next_due(current) is None:
            return
        updated = await fanout.work(current)
        if updated != current or not current.resolved:
            await save(updated)

    @faust_app.agent(inputs, name="privacy")
    async def privacy_agent(stream: Any) -> None:
        async for event in stream.events():
            with ctx.activity.working("privacy"):
                await handle(event.value)

    wake_topic = settings.topic(topics.PRIVACY_WORK)
    interval = max(0.5, min(settings.kseg_privacy_retry_seconds / 2, 30.0))

    @faust_app.timer(interval=interval)
    async def privacy_wakeups() -> None:
        """Wake every request whose next attempt is due (through its partition), and keep the open gauge."""
        now = time.time()
        requests = []
        wakes = []
        for _key, stored in list(table.items()):
            if not stored:
                continue
            request = PrivacyRequest.model_validate(stored)
            requests.append(request)
            at = next_due(request)
            if at is not None and at <= now:
                wakes.append(request.request_id)
        ages = open_ages_days(requests, datetime.now(UTC))
        fanout.metrics.open_requests.set(len(ages))
        fanout.metrics.open_oldest_days.set(max(ages, default=0.0))
        fanout.metrics.overdue.set(sum(1 for age in ages if age > settings.kseg_privacy_alert_days))
        if wakes:
            await ctx.outputs.send_all(
                (wake_topic, rid.encode(), PrivacyWake(request_id=rid).encode()) for rid in wakes
            )
