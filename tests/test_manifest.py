"""The Parquet manifest: schema, row checks, parts, compaction and reading (restoration.restore.manifest)."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from restoration.restore import manifest as m

DESIGN_COLUMNS = ["source_uri", "output_uri", "status", "error", "task", "model_id", "job_id", "width", "height",
                  "out_width", "out_height", "mode", "format", "bytes_in", "bytes_out", "seconds", "restored_at"]


def ok(source: str, job: str, **fields) -> dict:
    return {"source_uri": source, "output_uri": source.replace("in/", "out/"), "status": "ok", "task": "denoise",
            "model_id": "m1", "job_id": job, "width": 4, "height": 3, "bytes_in": 10, "bytes_out": 12,
            "seconds": 0.1, "restored_at": dt.datetime(2025, 1, 2, tzinfo=dt.timezone.utc), **fields}


def test_schema_has_the_design_columns_and_a_version() -> None:
    assert [c for c in DESIGN_COLUMNS if c not in m.MANIFEST_SCHEMA.names] == []
    assert m.MANIFEST_SCHEMA.metadata[b"restoration.restore.manifest.version"] == str(m.MANIFEST_VERSION).encode()
    assert m.MANIFEST_SCHEMA.field("restored_at").type == pa.timestamp("us", tz="UTC")


def test_rows_are_checked() -> None:
    table = m.rows_to_table([ok("in/a.png", "j"), m.error_row("in/b.png", OSError("boom"), "read")])
    assert table.column("status").to_pylist() == ["ok", "error"]
    assert table.column("output_uri").to_pylist()[1] is None
    with pytest.raises(ValueError, match="unknown manifest column"):
        m.rows_to_table([{**ok("in/a.png", "j"), "colour": 1}])
    with pytest.raises(ValueError, match="status must be one of"):
        m.rows_to_table([{**ok("in/a.png", "j"), "status": "done"}])
    with pytest.raises(ValueError, match="no output_uri"):
        m.rows_to_table([{**ok("in/a.png", "j"), "output_uri": None}])
    with pytest.raises(ValueError, match="error_stage"):
        m.rows_to_table([m.error_row("in/a.png", "x", "teleport")])


def test_error_rows_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    row = m.error_row("s3://b/a.png", "signature for very-secret-value does not match", "read")
    assert "very-secret-value" not in row["error"] and "***" in row["error"]


def test_job_ids_sort_by_time() -> None:
    early = m.new_job_id(dt.datetime(2025, 1, 1, 0, 0, 0, 5, tzinfo=dt.timezone.utc))
    late = m.new_job_id(dt.datetime(2025, 1, 1, 0, 0, 0, 40, tzinfo=dt.timezone.utc))
    assert early < late and early.startswith("20250101T000000000005Z-")


def test_writer_merges_small_parts_as_it_goes_and_a_crash_mid_merge_loses_nothing(tmp_path: Path) -> None:
    """Parts every flush keep a crash cheap; every ``merge_parts`` of them become one, so that a
    long run leaves few files. A crash after the merged part is written and before the small ones
    are deleted leaves their rows twice: readers take each input once."""
    output = str(tmp_path / "out")
    job = m.new_job_id(dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc))
    writer = m.ManifestWriter(output, job, flush_rows=1, merge_parts=3)
    for index in range(7):
        writer.add_rows([ok(f"in/{index}.png", job)])
    parts = sorted(os.listdir(tmp_path / "out/_manifest"))
    assert len(parts) == 3 and parts == sorted(Path(uri).name for uri in writer.parts)  # 2 merged, 1 small
    assert sorted(m.read_manifest(output).column("source_uri").to_pylist()) == sorted(f"in/{i}.png" for i in range(7))
    # The crash mid-merge: a merged part and one of the small parts it holds, side by side.
    merged = pq.read_table(tmp_path / "out/_manifest" / parts[0])
    pq.write_table(merged.slice(0, 1), tmp_path / "out/_manifest" / f"{job}-p000099.parquet")
    sources = m.read_manifest(output).column("source_uri").to_pylist()
    assert sorted(sources) == sorted(f"in/{i}.png" for i in range(7))
    writer.close()
    assert os.listdir(tmp_path / "out/_manifest") == [f"{job}-manifest.parquet"]
    assert len(m.read_manifest(output)) == 7


def test_writer_deduplicates_flushes_parts_and_compacts(tmp_path: Path) -> None:
    output = str(tmp_path / "out")
    first = m.new_job_id(dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc))
    writer = m.ManifestWriter(output, first, flush_rows=2)
    writer.add_rows([ok("in/a.png", first), ok("in/b.png", first)])
    writer.add_rows([ok("in/a.png", first, bytes_out=99), m.error_row("in/c.png", "bad", "decode", job_id=first)])
    assert writer.duplicates == 1 and writer.counts == {"ok": 2, "error": 1, "skipped": 0}
    assert len(writer.parts) == 1  # the third row is pending
    # A crash here leaves the part; the manifest already shows the first two rows.
    assert m.read_manifest(output).column("source_uri").to_pylist() == ["in/a.png", "in/b.png"]
    final = writer.close()
    files = sorted(os.listdir(tmp_path / "out/_manifest"))
    assert files == [Path(final).name] and final.endswith(f"{first}-manifest.parquet")
    table = m.read_manifest(output)
    assert table.column("source_uri").to_pylist() == ["in/a.png", "in/b.png", "in/c.png"]
    assert table.column("bytes_out").to_pylist()[0] == 12

    # A second run records c again and d; the compacted manifest keeps a, b and the latest c.
    second = m.new_job_id(dt.datetime(2025, 1, 2, tzinfo=dt.timezone.utc))
    writer = m.ManifestWriter(output, second)
    writer.add_rows([ok("in/c.png", second), ok("in/d.png", second)])
    writer.flush()
    before = m.read_manifest(output)  # parts and the old compacted file together
    writer.close()
    after = m.read_manifest(output)
    assert before.equals(after)
    assert dict(zip(after.column("source_uri").to_pylist(), after.column("job_id").to_pylist())) == {
        "in/a.png": first, "in/b.png": first, "in/c.png": second, "in/d.png": second}
    # Any Parquet reader sees one row per input: the summary and config files start with "_".
    (tmp_path / "out/_manifest" / m.SUMMARY_FILE).write_text(json.dumps({"counts": {}}))
    (tmp_path / "out/_manifest" / m.CONFIG_FILE).write_text("output: {}\n")
    frame = pd.read_parquet(tmp_path / "out/_manifest")
    assert sorted(frame["source_uri"]) == ["in/a.png", "in/b.png", "in/c.png", "in/d.png"]


def test_skipped_rows_carry_the_earlier_output() -> None:
    earlier = ok("in/a.png", "job-1", out_width=8, out_height=6, out_format="PNG")
    row = m.skipped_row(earlier, job_id="job-2", bytes_in=10)
    assert row["status"] == "skipped" and row["job_id"] == "job-2" and row["seconds"] == 0.0
    assert (row["output_uri"], row["out_width"], row["restored_at"]) == (
        earlier["output_uri"], 8, earlier["restored_at"])
    m.rows_to_table([row])


def test_other_schema_versions_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "out/_manifest"
    folder.mkdir(parents=True)
    job = m.new_job_id()
    table = m.rows_to_table([ok("in/a.png", job)]).replace_schema_metadata({b"restoration.restore.manifest.version": b"99"})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    (folder / f"{job}-manifest.parquet").write_bytes(buffer.getvalue())
    (folder / "notes.parquet").write_bytes(b"not ours: ignored")
    with pytest.raises(ValueError, match="schema version 99"):
        m.read_manifest(str(tmp_path / "out"))


def test_empty_output_has_an_empty_manifest(tmp_path: Path) -> None:
    table = m.read_manifest(str(tmp_path / "nothing-here"))
    assert table.num_rows == 0 and table.schema.equals(m.MANIFEST_SCHEMA)
    assert m.summarize(table) == {"ok": 0, "error": 0, "skipped": 0}


def test_rows_record_the_change_and_the_strength_and_count_unchanged_images() -> None:
    assert m.MANIFEST_VERSION == 3 and m.UNCHANGED_THRESHOLD == 0.5
    for name in ("mean_abs_change", "strength"):
        assert m.MANIFEST_SCHEMA.field(name).type == pa.float64()
    table = m.rows_to_table([
        ok("in/a.png", "j", mean_abs_change=0.0, strength=1.0),
        ok("in/b.png", "j", mean_abs_change=0.49, strength=1.0),
        ok("in/c.png", "j", mean_abs_change=3.2, strength=0.5),
        m.error_row("in/d.png", "bad", "decode"),
    ])
    assert m.count_unchanged(table) == 2
    assert m.count_unchanged(table, threshold=0.25) == 1 and m.count_unchanged(table, threshold=5) == 3
    row = m.skipped_row(table.to_pylist()[2], job_id="job-2", bytes_in=10)
    assert (row["mean_abs_change"], row["strength"]) == (3.2, 0.5)
    assert m.count_unchanged(m.rows_to_table([row])) == 0  # skipped rows were not restored by this run


@pytest.mark.parametrize("version", [1, 2])
def test_older_manifests_are_read_with_the_new_columns_null(tmp_path: Path, version: int) -> None:
    """An output restored by an older version can be run again: its rows read back, without the
    columns they never had (version 2 added change and strength, version 3 the measures and
    routes)."""
    folder = tmp_path / "out/_manifest"
    folder.mkdir(parents=True)
    job = m.new_job_id()
    added = [name for later in range(version + 1, m.MANIFEST_VERSION + 1) for name in m._ADDED_IN[later]]
    assert {"noise_sigma", "route", "route_reason"} <= set(added)
    older = m.rows_to_table([ok("in/a.png", job)]).drop_columns(added)
    older = older.replace_schema_metadata({b"restoration.restore.manifest.version": str(version).encode()})
    buffer = io.BytesIO()
    pq.write_table(older, buffer)
    (folder / f"{job}-manifest.parquet").write_bytes(buffer.getvalue())
    table = m.read_manifest(str(tmp_path / "out"))
    assert table.schema.equals(m.MANIFEST_SCHEMA)
    [row] = table.to_pylist()
    assert row["source_uri"] == "in/a.png" and all(row[name] is None for name in added)
    # Compaction by the next run rewrites it at the current version.
    writer = m.ManifestWriter(str(tmp_path / "out"), m.new_job_id())
    writer.add_rows([ok("in/b.png", writer.job_id, mean_abs_change=1.0, strength=1.0)])
    final = writer.close()
    assert pq.read_schema(final).metadata[b"restoration.restore.manifest.version"] == str(m.MANIFEST_VERSION).encode()
    assert len(m.read_manifest(str(tmp_path / "out"))) == 2
