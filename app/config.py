"""The whole of kseg's settings, read from the environment and an optional `.env`: for the roots only.

One `Settings` object is built per process (`get_settings()`) by its root (the CLI entry points, the
worker's composition root, the receiver's app factory, the supervisor), in the manner of
lsst-sqre/kafka-aggregator. `Settings` joins the per-domain sections of `app.sections`; the roots pass it
on, and each domain's functions are typed with the one section they read.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic_settings import BaseSettings, SettingsConfigDict

from app.sections import (
    AudienceSettings,
    ConsoleSettings,
    DigestSettings,
    MappingSettings,
    PrivacySettings,
    ReceiverSettings,
    SegmentSettings,
    WorkerSettings,
)


class Settings(
    PrivacySettings,  # first: it extends DigestSettings
    DigestSettings,
    ConsoleSettings,  # before MappingSettings: it extends it
    MappingSettings,
    ReceiverSettings,
    WorkerSettings,
    SegmentSettings,
    AudienceSettings,
    BaseSettings,
):
    """All kseg settings: every section at once. Names are the environment variables, listed in the README.

    Errors never echo an input value (`hide_input_in_errors`): a bad value may sit next to a secret."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", hide_input_in_errors=True
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
