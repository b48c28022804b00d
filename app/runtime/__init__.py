"""What the worker's agents run on: the `WorkerContext` each domain's `register()` receives, the topic
handles, readiness, and the agent-activity bookkeeping of the stall watchdog. Below every agent; only
`app/worker/` (the composition root) builds it."""
