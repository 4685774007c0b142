"""``StockRecordFiles`` answers by the files alone, whatever order dates are asked in.

One reader serves every partition of the stream job, and partitions stand at different event
times (one replays an outage while another is live): a store may ask for an older record date
after another store asked for a newer one. Its answer must be the files' (what a restart that
asks in the other order would get), not ``None`` because the folder was already scanned.
"""

from __future__ import annotations

from cloud.stream.stock import StockRecordFiles


def _write(folder) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["date,store_id,sku,book_units,counted_units"]
    for day in range(1, 8):
        lines += [f"2026-01-0{day},s1,A,{day},", f"2026-01-0{day},s2,A,{10 + day},"]
    (folder / "stock_record_all.csv").write_text("\n".join(lines) + "\n")


def test_an_older_date_asked_after_a_newer_one_gets_the_files_record(tmp_path):
    _write(tmp_path / "erp")
    stock = StockRecordFiles(tmp_path / "erp")
    assert stock.book("s1", "2026-01-06") == {"A": 6}
    assert stock.book("s2", "2026-01-05") == {"A": 15}  # a lagging partition's store, one day behind


def test_a_date_older_than_the_kept_days_still_gets_its_record(tmp_path):
    _write(tmp_path / "erp")
    stock = StockRecordFiles(tmp_path / "erp", keep_days=3)
    for day in (5, 6, 7):
        assert stock.book("s1", f"2026-01-0{day}") == {"A": day}
    assert stock.book("s2", "2026-01-02") == {"A": 12}
    assert stock.book("s1", "2026-01-07") == {"A": 7}  # a kept date still answers


def test_the_answer_does_not_depend_on_the_order_of_the_questions(tmp_path):
    _write(tmp_path / "erp")
    asks = [("s1", "2026-01-07"), ("s2", "2026-01-03"), ("s1", "2026-01-05"), ("s2", "2026-01-07")]
    forward = [StockRecordFiles(tmp_path / "erp").book(*a) for a in asks]
    one = StockRecordFiles(tmp_path / "erp")
    backward = [one.book(*a) for a in reversed(asks)][::-1]
    assert forward == backward == [{"A": 7}, {"A": 13}, {"A": 5}, {"A": 17}]
