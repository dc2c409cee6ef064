from __future__ import annotations

from datetime import UTC, datetime, timedelta

from delivery.apk import newest_apk, parse_apk_key

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_highest_semantic_version_wins_not_the_highest_string() -> None:
    # As strings "1.9.0" > "1.10.0"; a customer must still get 1.10.0.
    objects = [
        ("apk/ems-hmi-1.9.0.apk", T0 + timedelta(hours=2)),
        ("apk/ems-hmi-1.10.0.apk", T0),
        ("apk/ems-hmi-1.2.11.apk", T0 + timedelta(hours=1)),
    ]

    chosen = newest_apk(objects)

    assert chosen is not None
    assert chosen.key == "apk/ems-hmi-1.10.0.apk"
    assert chosen.version == "1.10.0"
    assert chosen.name == "ems-hmi"


def test_each_version_part_compares_numerically() -> None:
    objects = [("apk/ems-hmi-2.0.9.apk", T0), ("apk/ems-hmi-2.0.10.apk", T0), ("apk/ems-hmi-10.0.0.apk", T0)]

    chosen = newest_apk(objects)

    assert chosen is not None and chosen.version == "10.0.0"


def test_equal_version_is_decided_by_the_later_upload() -> None:
    rebuilt = ("apk/ems-hmi-rebuilt-1.4.0.apk", T0 + timedelta(minutes=5))
    original = ("apk/ems-hmi-1.4.0.apk", T0)

    for objects in ([original, rebuilt], [rebuilt, original]):
        chosen = newest_apk(objects)
        assert chosen is not None
        assert chosen.key == rebuilt[0]
        assert chosen.last_modified == rebuilt[1]


def test_a_higher_version_beats_a_later_upload() -> None:
    chosen = newest_apk([("apk/ems-hmi-1.5.0.apk", T0), ("apk/ems-hmi-1.4.9.apk", T0 + timedelta(days=3))])

    assert chosen is not None and chosen.version == "1.5.0"


def test_foreign_keys_under_the_prefix_are_ignored() -> None:
    objects = [
        ("apk/ems-hmi-1.0.0.apk", T0),
        ("apk/ems-hmi-9.0.0.apk.sha256", T0),
        ("apk/README.md", T0),
        ("apk/ems-hmi-latest.apk", T0),
        ("apk/ems-hmi-9.0.apk", T0),
        ("apk/Ems-Hmi-9.0.0.apk", T0),
        ("apk/nested/ems-hmi-9.0.0.apk", T0),
        ("apk/ems-hmi-9.0.0-rc1.apk", T0),
        ("other/ems-hmi-9.0.0.apk", T0),
    ]

    chosen = newest_apk(objects)

    assert chosen is not None
    assert chosen.key == "apk/ems-hmi-1.0.0.apk"


def test_parse_rejects_what_is_not_an_apk_of_the_ci() -> None:
    assert parse_apk_key("apk/ems-hmi-1.0.0.apk", T0) is not None
    assert parse_apk_key("apk/ems-hmi-1.0.0.zip", T0) is None
    assert parse_apk_key("apk/-1.0.0.apk", T0) is None


def test_nothing_to_choose_from_gives_none() -> None:
    assert newest_apk([]) is None
    assert newest_apk([("apk/notes.txt", T0), ("apk/", T0)]) is None
