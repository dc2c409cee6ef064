"""The portal's download record: what is kept, what an order's view reads back, what expires."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from platform_db.downloads import DownloadRepository
from tests.platform_db.conftest import Connect

UA = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"
CLIENT = "203.0.113.0/24"


@pytest.fixture
def downloads(connect: Connect) -> DownloadRepository:
    return connect(DownloadRepository)


@pytest.fixture
def cfg_id(new_order: Callable[[], str]) -> str:
    return new_order()


def _download(downloads: DownloadRepository, cfg_id: str, version: int, file: str, at: datetime) -> None:
    downloads.record(cfg_id, version=version, file=file, user_agent=UA, client=CLIENT, at=at)


def _page_view(downloads: DownloadRepository, cfg_id: str, version: int | None, at: datetime) -> None:
    downloads.record(cfg_id, version=version, file=None, user_agent=UA, client=CLIENT, at=at)


def test_an_entry_reads_back_as_recorded(downloads: DownloadRepository, cfg_id: str) -> None:
    recorded = downloads.record(cfg_id, version=2, file="cfn.yaml", user_agent=UA, client=CLIENT)

    [entry] = downloads.recent(cfg_id, 10)

    assert entry == recorded
    assert (entry.cfg_id, entry.version, entry.file, entry.user_agent, entry.client) == (
        cfg_id,
        2,
        "cfn.yaml",
        UA,
        CLIENT,
    )
    assert not entry.page_view
    assert entry.at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - entry.at) < timedelta(minutes=1)


def test_a_landing_page_view_has_neither_version_nor_file(downloads: DownloadRepository, cfg_id: str) -> None:
    downloads.record(cfg_id, version=None, file=None, user_agent=None, client=None)

    [entry] = downloads.recent(cfg_id, 10)

    assert entry.page_view
    assert (entry.version, entry.file, entry.user_agent, entry.client) == (None, None, None, None)


def test_recent_is_the_newest_first_of_this_order_only(
    downloads: DownloadRepository, cfg_id: str, new_order: Callable[[], str]
) -> None:
    other = new_order()
    start = datetime.now(UTC) - timedelta(hours=1)
    for minute in range(5):
        _download(downloads, cfg_id, 1, f"file-{minute}.bin", start + timedelta(minutes=minute))
    _download(downloads, other, 1, "theirs.bin", start + timedelta(minutes=10))

    newest = downloads.recent(cfg_id, 3)

    assert [entry.file for entry in newest] == ["file-4.bin", "file-3.bin", "file-2.bin"]
    assert [entry.file for entry in downloads.recent(other, 10)] == ["theirs.bin"]


def test_only_a_file_of_the_version_counts_as_fetched(downloads: DownloadRepository, cfg_id: str) -> None:
    now = datetime.now(UTC)
    _page_view(downloads, cfg_id, None, now)
    _page_view(downloads, cfg_id, 2, now)
    _download(downloads, cfg_id, 1, "cfn.yaml", now)

    # Looking at version 2's page fetched nothing of it; version 1's file was.
    assert not downloads.fetched(cfg_id, 2)
    assert downloads.fetched(cfg_id, 1)

    _download(downloads, cfg_id, 2, "manifest.json", now)
    assert downloads.fetched(cfg_id, 2)


def test_counts_tell_downloads_from_page_views(downloads: DownloadRepository, cfg_id: str) -> None:
    assert downloads.counts(cfg_id).downloads == 0
    assert downloads.counts(cfg_id).last_download_at is None
    start = datetime.now(UTC) - timedelta(hours=2)
    _download(downloads, cfg_id, 1, "cfn.yaml", start)
    _download(downloads, cfg_id, 1, "dtm.json", start + timedelta(minutes=5))
    # A page view after the last download is not a download.
    _page_view(downloads, cfg_id, None, start + timedelta(minutes=30))

    counts = downloads.counts(cfg_id)

    assert (counts.downloads, counts.page_views) == (2, 1)
    assert counts.last_download_at == start + timedelta(minutes=5)


def test_expire_deletes_only_what_is_older_than_the_cutoff(
    downloads: DownloadRepository, cfg_id: str, new_order: Callable[[], str]
) -> None:
    other = new_order()
    now = datetime.now(UTC)
    _download(downloads, cfg_id, 1, "old.bin", now - timedelta(days=91))
    _page_view(downloads, other, None, now - timedelta(days=95))
    _download(downloads, cfg_id, 1, "kept.bin", now - timedelta(days=89))

    expired = downloads.expire(now - timedelta(days=90))

    assert expired == 2
    assert [entry.file for entry in downloads.recent(cfg_id, 10)] == ["kept.bin"]
    assert downloads.recent(other, 10) == []
    assert downloads.expire(now - timedelta(days=90)) == 0


def test_orders_recorded_after_an_id_page_by_their_newest_entry(
    downloads: DownloadRepository, new_order: Callable[[], str]
) -> None:
    first, second, third = new_order(), new_order(), new_order()
    assert downloads.orders_recorded_after(0) == {}
    entry_ids = [
        downloads.record(cfg_id, version=1, file=None, user_agent=None, client=None).id
        for cfg_id in (first, second, first, third)
    ]

    assert downloads.orders_recorded_after(0) == {
        second: entry_ids[1],
        first: entry_ids[2],
        third: entry_ids[3],
    }
    # A page of two: the cursor (the largest id answered) still finds the order left out.
    page = downloads.orders_recorded_after(0, limit=2)
    assert list(page) == [second, first]
    assert downloads.orders_recorded_after(max(page.values())) == {third: entry_ids[3]}
    assert downloads.orders_recorded_after(entry_ids[3]) == {}


def test_values_longer_than_their_columns_are_clipped_not_refused(
    downloads: DownloadRepository, cfg_id: str
) -> None:
    downloads.record(cfg_id, version=1, file="f" * 300, user_agent="u" * 300, client="c" * 300)

    [entry] = downloads.recent(cfg_id, 1)

    assert (len(entry.file or ""), len(entry.user_agent or ""), len(entry.client or "")) == (128, 256, 64)


def test_the_record_is_shared_between_processes(connect: Connect, cfg_id: str) -> None:
    writer, reader = connect(DownloadRepository), connect(DownloadRepository)

    writer.record(cfg_id, version=1, file="cfn.yaml", user_agent=UA, client=CLIENT)

    assert reader.fetched(cfg_id, 1)
