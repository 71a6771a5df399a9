"""The catalog-change event: a batch's names, or none of them when they would not fit."""

from __future__ import annotations

from emergify_contracts.events import CATALOG_CHANGE_MAX_NAMES, CatalogChange

# What a Kafka broker and producer accept by default for one record.
ONE_MEGABYTE = 1_048_576


def ids(n: int) -> list[str]:
    return [f"{i:022d}" for i in range(n)]


def test_a_batch_within_the_limit_names_its_songs_and_artists() -> None:
    change = CatalogChange.of_batch(7, ids(3), ["name:a"], songs=10, profiles_model_version=2)
    assert change.listed and change.upserted_ids == ids(3) and change.artists_changed == ["name:a"]
    assert change.upserted == 3 and change.profiles_model_version == 2 and change.songs == 10


def test_a_batch_over_the_limit_is_announced_without_names_and_fits_one_record() -> None:
    at_limit = CatalogChange.of_batch(1, ids(CATALOG_CHANGE_MAX_NAMES - 1), ["name:a"], songs=0)
    assert at_limit.listed
    # The biggest listed event: ids and artist keys of ~the same length, well under 1 MB.
    assert len(at_limit.model_dump_json()) < ONE_MEGABYTE // 2 + 64 * 1024

    over = CatalogChange.of_batch(2, ids(CATALOG_CHANGE_MAX_NAMES), ["name:a"], songs=0)
    assert not over.listed and over.upserted_ids == [] and over.artists_changed == []
    assert over.upserted == CATALOG_CHANGE_MAX_NAMES
    assert len(over.model_dump_json()) < 1024


def test_an_event_written_before_the_fields_existed_reads_as_listed() -> None:
    old = CatalogChange.model_validate_json(
        '{"table_version": 3, "upserted_ids": ["a", "b"], "songs": 2}'
    )
    assert old.listed and old.upserted == 2 and old.upserted_count is None
