"""Per-device attribution state: first touch, last re-engagement, value and conversion.

`apply_event` is pure (it returns a new profile) so the worker can store the result back into its
table explicitly; faust writes no changelog entry for an in-place mutation.
"""

from __future__ import annotations

from app.records import AttributionProfile, CanonicalEvent


def _same_install(profile: AttributionProfile, event: CanonicalEvent) -> bool:
    """A replay of the install that set first touch (at-least-once delivery), not a second install."""
    if event.install_id and profile.install_id:
        return event.install_id == profile.install_id
    return profile.first_touch is not None and profile.first_touch == event.attribution


def apply_event(profile: AttributionProfile, event: CanonicalEvent) -> tuple[AttributionProfile, bool]:
    """The profile after `event`, and whether the event is the device's first install.

    - first touch: set once, from the first install; later installs never overwrite it. A replay of
      that same install reports `first_install=True` again so its rebuilt messages are identical
      (same messageIds, deduplicated by Segment) instead of turning into a "reinstall".
    - last touch: the latest re-engagement (by event time; late arrivals do not move it back).
    - revenue: only purchase events count, so an app sending both `Subscribe` and `Purchase` for
      one transaction is not counted twice.
    - conversion: flag, time and name of the first conversion event.
    """
    updated = profile.model_copy()  # every change below assigns a field: nothing nested is mutated
    first_install = False
    touch = event.attribution  # the profile keeps a copy of it, made only where it keeps one

    if event.kind == "install":
        if updated.first_touch is None:
            updated.first_touch = touch.model_copy()
            updated.install_id = event.install_id
            first_install = True
        elif _same_install(updated, event):
            first_install = True
    elif event.kind == "reinstall" and updated.install_id is None:
        updated.install_id = event.original_install_id

    if event.reengagement:
        last = updated.last_touch
        if last is None or (last.attributed_at or "") <= (touch.attributed_at or ""):
            updated.last_touch = touch.model_copy()

    if event.kind == "purchase":
        updated.purchase_count += 1
        if event.revenue is not None:
            updated.lifetime_revenue = round(updated.lifetime_revenue + event.revenue, 6)

    if event.kind == "conversion" and not updated.converted:
        updated.converted = True
        updated.converted_at = event.timestamp
        updated.conversion_name = event.conversion_name or event.segment_event_name

    return updated, first_install
