"""`kseg_uuid5` is `uuid.uuid5` under kseg's namespace, character for character: every messageId and
anonymousId Segment has already seen must come out the same."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from app.ids import KSEG_UUID_NAMESPACE, anonymous_id_for, kseg_uuid5, message_id_for


@given(st.text(max_size=200))
def test_kseg_uuid5_is_the_standard_uuid5(name: str) -> None:
    try:
        expected = str(uuid.uuid5(KSEG_UUID_NAMESPACE, name))
    except UnicodeEncodeError:  # a lone surrogate: neither can hash it
        try:
            kseg_uuid5(name)
        except UnicodeEncodeError:
            return
        raise AssertionError("kseg_uuid5 hashed what uuid5 cannot") from None
    assert kseg_uuid5(name) == expected


def test_known_ids_stay_the_same() -> None:
    # Fixed values: a changed derivation would send Segment new ids for events it already has.
    assert message_id_for("kseg", "e1", "track") == "03fa8a84-9a83-5175-a5db-cf487fa3190e"
    assert anonymous_id_for("kseg", "KA") == "66e0b541-2a0a-5b99-b492-bbfdfd2b96eb"
