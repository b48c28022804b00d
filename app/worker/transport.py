"""kseg's faust transport: faust's aiokafka transport with the worker's own consumer fetch wait.

faust hard-codes `fetch_max_wait_ms=1500`. A broker that holds an empty fetch for the whole wait (the
embedded Tansu broker does) then adds up to 1.5 s per hop, and kseg has two hops (raw → worker,
outbox → Segment sink): about 1.2 s end to end for an idle pipeline. The wait comes from the app
(`KsegApp.fetch_max_wait_ms`, from `Settings.fetch_max_wait_ms`). Registered as the `ksegkafka://`
scheme through faust's documented `faust.transports` entry point.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

#: Longest time a fetch may wait for data when the app does not say (`KsegApp.fetch_max_wait_ms`).
FETCH_MAX_WAIT_MS = 100


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read when the consumer starts its fetcher.
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_max_wait_ms", FETCH_MAX_WAIT_MS)
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
