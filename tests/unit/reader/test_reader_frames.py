"""to_pandas / to_polars / to_arrow where installed, and a clear ImportError naming the extra where not."""

from __future__ import annotations

import sys

import pytest

from airflow_provider_openai_batch import read_results
from airflow_provider_openai_batch.reader import text


def test_to_pandas_has_one_row_per_record_with_dict_columns(landed):
    pd = pytest.importorskip("pandas")
    df = read_results(landed["folder"], landed["requests"]).to_pandas()
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["custom_id", "status_code", "response", "error", "request"]
    assert len(df) == len(landed["ids"])
    row = df.set_index("custom_id").loc["r12"]
    assert (
        text(row["response"]) == "answer r12" and row["request"]["messages"][0]["content"] == "question r12"
    )


def test_to_arrow_and_to_polars_type_bodies_as_structs(landed):
    pytest.importorskip("pyarrow")
    pl = pytest.importorskip("polars")
    table = read_results(landed["folder"]).to_arrow()
    assert table.num_rows == len(landed["ids"])
    assert str(table.schema.field("response").type).startswith("struct<")
    df = read_results(landed["folder"], landed["requests"]).to_polars()
    answers = df.filter(pl.col("custom_id") == "r2")["response"].struct.field("choices").to_list()
    assert answers[0][0]["message"]["content"] == "answer r2"


def test_bodies_whose_types_change_need_json_columns(tmp_path):
    pa = pytest.importorskip("pyarrow")
    from tests.unit.reader.builders import ok_line, write_jsonl

    path = write_jsonl(tmp_path / "output.jsonl", [ok_line("a", {"v": 1}), ok_line("b", {"v": "one"})])
    with pytest.raises(ValueError, match="json_columns=True"):
        read_results(path).to_arrow()
    table = read_results(path).to_arrow(json_columns=True)
    assert table.schema.field("response").type == pa.string()
    assert table.column("response").to_pylist() == ['{"v":1}', '{"v":"one"}']


@pytest.mark.parametrize(
    "method, module, extra",
    [
        ("to_pandas", "pandas", "pandas"),
        ("to_polars", "polars", "polars"),
        ("to_arrow", "pyarrow", "pyarrow"),
    ],
)
def test_missing_library_names_the_extra_to_install(landed, monkeypatch, method, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(ImportError, match=rf"airflow-provider-openai-batch\[{extra}\]"):
        getattr(read_results(landed["folder"]), method)()
