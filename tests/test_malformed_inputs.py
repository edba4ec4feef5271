"""Fuzz suite: malformed inputs through the real CLI, in a subprocess with a timeout.

A 60-customer demo folder (CSV) is generated once; each case copies it, breaks one thing, and runs
``churn score`` (or another command) against the session's trained model. Every case asserts: the exit
code is the one written in the table (all of them documented sysexit codes), no traceback, the error
names table and column where there is one, and ``--out`` is either untouched or complete (never partial).
Cases that succeed are accepted on purpose; the reason is written beside them and in README's table.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, Store

DOCUMENTED_EXIT_CODES = {0, 2, 64, 65, 66, 75, 78}  # 2: click usage error; the rest: churn.errors / sysexits
SCORE_OUTPUTS = {"scores.parquet", "alerts.parquet", "alerts.csv", "alerts.jsonl", "drift.csv", "report.html",
                 "summary.json"}
TIMEOUT_S = 90


@dataclass
class Ctx:
    data: Path
    config: Path
    out: Path
    extra: list[str]


Mutation = Callable[[Ctx], None]


@dataclass(frozen=True)
class Case:
    id: str
    mutate: Mutation
    rc: int
    where: str | None = None  # "table 'x', column 'y'" (or "table 'x'") expected in stderr
    accepted: str | None = None  # rc 0: why this input is fine on purpose
    command: str = "features"  # most cases fail at validation: the light command; "score" where the model matters


# --------------------------------------------------------------------------- mutation helpers
def _csv(ctx: Ctx, table: str) -> Path:
    return ctx.data / f"{table}.csv"


def edit(table: str, fn: Callable[[pd.DataFrame], pd.DataFrame | None]) -> Mutation:
    """Read a table as text columns, change it with ``fn``, write it back."""

    def _m(ctx: Ctx) -> None:
        df = pd.read_csv(_csv(ctx, table), dtype=str, keep_default_na=False)
        res = fn(df)
        (df if res is None else res).to_csv(_csv(ctx, table), index=False)

    return _m


def set_cell(table: str, col: str, value: str, rows: int = 1) -> Mutation:
    def _fn(df: pd.DataFrame) -> None:
        df.loc[df.index[:rows], col] = value

    return edit(table, _fn)


def drop_col(table: str, col: str) -> Mutation:
    return edit(table, lambda df: df.drop(columns=[col]))


def raw_bytes(table: str, fn: Callable[[bytes], bytes]) -> Mutation:
    def _m(ctx: Ctx) -> None:
        p = _csv(ctx, table)
        p.write_bytes(fn(p.read_bytes()))

    return _m


def as_parquet(table: str, fn: Callable[[Path], None]) -> Mutation:
    """Replace ``table.csv`` by ``table.parquet`` made by ``fn(path)``."""

    def _m(ctx: Ctx) -> None:
        _csv(ctx, table).unlink()
        fn(ctx.data / f"{table}.parquet")

    return _m


def config_edit(fn: Callable[[dict], None]) -> Mutation:
    def _m(ctx: Ctx) -> None:
        raw = yaml.safe_load(ctx.config.read_text())
        fn(raw)
        ctx.config.write_text(yaml.safe_dump(raw))

    return _m


def args(*extra: str) -> Mutation:
    def _m(ctx: Ctx) -> None:
        ctx.extra.extend(extra)

    return _m


def _spark_dataset(table: str) -> Mutation:
    def _m(ctx: Ctx) -> None:
        df = pd.read_csv(_csv(ctx, table))
        _csv(ctx, table).unlink()
        folder = ctx.data / f"{table}.parquet"
        folder.mkdir()
        half = len(df) // 2
        df.iloc[:half].to_parquet(folder / "part-00000-x.snappy.parquet", index=False)
        df.iloc[half:].to_parquet(folder / "part-00001-x.snappy.parquet", index=False)
        (folder / "_SUCCESS").write_bytes(b"")

    return _m


def _event_types(n: int) -> Mutation:
    def _fn(df: pd.DataFrame) -> None:
        df["event_type"] = [f"type_{i % n}" for i in range(len(df))]

    return edit("events", _fn)


def _symlink_customers(ctx: Ctx) -> None:
    real = ctx.data.parent / "elsewhere.csv"
    shutil.move(_csv(ctx, "customers"), real)
    _csv(ctx, "customers").symlink_to(real)


def _dangling_symlink(ctx: Ctx) -> None:
    _csv(ctx, "customers").unlink()
    _csv(ctx, "customers").symlink_to(ctx.data / "nowhere.csv")


def _fifo_customers(ctx: Ctx) -> None:
    _csv(ctx, "customers").unlink()
    os.mkfifo(_csv(ctx, "customers"))


def _empty_folder_as_table(ctx: Ctx) -> None:
    _csv(ctx, "customers").unlink()
    (ctx.data / "customers").mkdir()
    (ctx.data / "customers" / "notes.txt").write_text("not a table")


def _foreign_out(ctx: Ctx) -> None:
    ctx.out.mkdir(parents=True)
    (ctx.out / "precious.txt").write_text("someone else's file")


def _out_is_file(ctx: Ctx) -> None:
    ctx.out.parent.mkdir(parents=True, exist_ok=True)
    ctx.out.write_text("a file")


def _data_is_file(ctx: Ctx) -> None:
    shutil.rmtree(ctx.data)
    ctx.data.write_text("not a folder")


def _unknown_customer_rows(table: str) -> Mutation:
    return set_cell(table, "customer_id", "C9999999", rows=3)


def _duplicate_first_customer(df: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([df, df.iloc[[0]]], ignore_index=True)


def _latin1_text(b: bytes) -> bytes:
    assert b"The " in b, "no anchor in the interactions text for the latin-1 bytes"  # never a silent no-op
    return b.replace(b"The ", "Ça coûte trop cher, Stíll. The ".encode("latin-1"), 1)


def _mixed_delimiters(b: bytes) -> bytes:
    lines = b.split(b"\n")
    lines[3] = lines[3].replace(b",", b";")
    return b"\n".join(lines)


def _huge_attribute(df: pd.DataFrame) -> None:
    df.loc[df.index[0], "plan"] = "x" * 1_000_000


def _ids_numeric_everywhere(ctx: Ctx) -> None:
    for t in ("customers", "events", "transactions", "interactions"):
        p = _csv(ctx, t)
        df = pd.read_csv(p, dtype=str, keep_default_na=False)
        df["customer_id"] = df["customer_id"].str.lstrip("C").astype(int).astype(str)
        df.to_csv(p, index=False)


def _timestamps_with_offsets(df: pd.DataFrame) -> None:
    ts = pd.to_datetime(df["timestamp"])
    df["timestamp"] = [t.strftime("%Y-%m-%dT%H:%M:%S") + ("+02:00" if i % 2 else "Z") for i, t in enumerate(ts)]


def _corrupt_parquet(p: Path) -> None:
    pd.DataFrame({"customer_id": ["a"]}).to_parquet(p)
    b = p.read_bytes()
    p.write_bytes(b[: len(b) // 2] + bytes(reversed(b[len(b) // 2:])))


def _parquet_wrong_types(p: Path) -> None:
    pd.DataFrame({"customer_id": [1.5, 2.5], "signup_date": [True, False], "churn_date": [None, None],
                  "plan": [1, 2], "channel": ["a", "b"], "region": ["x", "y"]}).to_parquet(p)


def _parquet_far_future(p: Path) -> None:
    df = pd.DataFrame({"customer_id": ["C0000001"], "timestamp": pd.array([pd.Timestamp("2400-01-01")],
                                                                          dtype="datetime64[us]"),
                       "amount": [1.0]})
    df.to_parquet(p, index=False)


def _epoch_timestamps(df: pd.DataFrame) -> None:
    df["timestamp"] = (pd.to_datetime(df["timestamp"]).astype("int64") // 10**9).astype(str)


def _gzip_named_csv(ctx: Ctx) -> None:
    import gzip

    p = _csv(ctx, "events")
    p.write_bytes(gzip.compress(p.read_bytes()))


def _padded_ids(df: pd.DataFrame) -> None:
    df["customer_id"] = " " + df["customer_id"] + " "


def _rm(table: str) -> Mutation:
    return lambda ctx: _csv(ctx, table).unlink()


# --------------------------------------------------------------------------- the table of cases
CASES: list[Case] = [
    # files and folders
    Case("customers_missing", _rm("customers"), 66),
    Case("events_missing", _rm("events"), 65, "table 'features'", command="score"),  # the model needs event features
    Case("data_folder_missing", lambda ctx: shutil.rmtree(ctx.data), 66),
    Case("data_folder_is_a_file", _data_is_file, 66),
    Case("customers_zero_bytes", raw_bytes("customers", lambda b: b""), 65, "table 'customers'"),
    Case("customers_header_only", raw_bytes("customers", lambda b: b.split(b"\n")[0] + b"\n"), 65,
         "table 'customers'"),
    Case("events_header_only", raw_bytes("events", lambda b: b.split(b"\n")[0] + b"\n"), 65, "table 'events'"),
    Case("customers_zero_byte_parquet", as_parquet("customers", lambda p: p.write_bytes(b"")), 65,
         "table 'customers'"),
    Case("customers_corrupted_parquet", as_parquet("customers", _corrupt_parquet), 65, "table 'customers'"),
    Case("customers_folder_without_parquet", _empty_folder_as_table, 65, "table 'customers'"),
    Case("customers_dangling_symlink", _dangling_symlink, 66),
    Case("customers_is_a_fifo", _fifo_customers, 66),
    Case("events_spark_dataset_folder", _spark_dataset("events"), 0,
         accepted="a Parquet dataset folder (Spark's output) is read as the table, like the single file",
         command="score"),
    Case("customers_symlink", _symlink_customers, 0,
         accepted="a symlink is followed like the file it points to (exports are often linked in)"),
    # columns and types
    Case("customers_no_signup_date", drop_col("customers", "signup_date"), 65,
         "table 'customers', column 'signup_date'"),
    Case("customers_no_id_column", drop_col("customers", "customer_id"), 65, "table 'customers', column 'customer_id'"),
    Case("customers_no_attribute_column", drop_col("customers", "plan"), 65, "table 'customers', column 'plan'"),
    Case("events_no_event_type", drop_col("events", "event_type"), 65, "table 'events', column 'event_type'"),
    Case("transactions_no_amount", drop_col("transactions", "amount"), 65, "table 'transactions', column 'amount'"),
    Case("customers_parquet_wrong_types", as_parquet("customers", _parquet_wrong_types), 65,
         "table 'customers', column 'signup_date'"),
    Case("events_extra_column", edit("events", lambda df: df.assign(debug_blob="x")), 0,
         accepted="columns outside the contract are ignored (exports carry extra columns)"),
    # ids
    Case("customers_duplicate_ids", edit("customers", _duplicate_first_customer), 65,
         "table 'customers', column 'customer_id'"),
    Case("customers_blank_id", set_cell("customers", "customer_id", ""), 65, "table 'customers', column 'customer_id'"),
    Case("events_unknown_customers", _unknown_customer_rows("events"), 65, "table 'events', column 'customer_id'"),
    Case("interactions_unknown_customers", _unknown_customer_rows("interactions"), 65,
         "table 'interactions', column 'customer_id'"),
    Case("ids_numeric_everywhere", _ids_numeric_everywhere, 0,
         accepted="numeric ids are ids as text: 17 in one table matches 17 in another"),
    # dates
    Case("signup_unparseable", set_cell("customers", "signup_date", "not a date"), 65,
         "table 'customers', column 'signup_date'"),
    Case("signup_year_2300", set_cell("customers", "signup_date", "2300-01-01"), 65,
         "table 'customers', column 'signup_date'"),
    Case("churn_before_signup", set_cell("customers", "churn_date", "1990-01-01"), 65,
         "table 'customers', column 'churn_date'"),
    Case("events_timestamp_year_9999", set_cell("events", "timestamp", "9999-12-31 00:00:00"), 65,
         "table 'events', column 'timestamp'"),
    Case("events_timestamp_blank", set_cell("events", "timestamp", ""), 65, "table 'events', column 'timestamp'"),
    Case("transactions_parquet_year_2400", as_parquet("transactions", _parquet_far_future), 65,
         "table 'transactions', column 'timestamp'"),
    Case("transactions_epoch_seconds", edit("transactions", _epoch_timestamps), 65,
         "table 'transactions', column 'timestamp'"),
    Case("events_timestamps_mixed_offsets", edit("events", _timestamps_with_offsets), 0,
         accepted="timestamps with UTC offsets are converted to UTC (documented in the data contract)"),
    # numbers
    Case("amount_negative", set_cell("transactions", "amount", "-5"), 65, "table 'transactions', column 'amount'"),
    Case("amount_inf", set_cell("transactions", "amount", "inf"), 65, "table 'transactions', column 'amount'"),
    Case("amount_1e308", set_cell("transactions", "amount", "1e308"), 65, "table 'transactions', column 'amount'"),
    Case("amount_blank", set_cell("transactions", "amount", ""), 65, "table 'transactions', column 'amount'"),
    Case("amount_decimal_comma", set_cell("transactions", "amount", "12,50"), 65,
         "table 'transactions', column 'amount'"),
    Case("event_value_text", set_cell("events", "value", "abc"), 65, "table 'events', column 'value'"),
    Case("event_value_minus_inf", set_cell("events", "value", "-inf"), 65, "table 'events', column 'value'"),
    Case("rating_minus_5", set_cell("interactions", "rating", "-5"), 65, "table 'interactions', column 'rating'"),
    Case("rating_1e9", set_cell("interactions", "rating", "1e9"), 65, "table 'interactions', column 'rating'"),
    Case("rating_text", set_cell("interactions", "rating", "good"), 65, "table 'interactions', column 'rating'"),
    Case("rating_nan", set_cell("interactions", "rating", "nan"), 0,
         accepted="a missing rating is missing (NaN), not an error: ratings are optional per interaction"),
    Case("event_types_300", _event_types(300), 65, "table 'events', column 'event_type'"),
    # encodings and layout
    Case("customers_utf8_bom", raw_bytes("customers", lambda b: b"\xef\xbb\xbf" + b), 0,
         accepted="a UTF-8 byte-order mark (Excel's CSV export) is stripped by the reader"),
    Case("interactions_latin1_bytes", raw_bytes("interactions", _latin1_text), 65, "table 'interactions'"),
    Case("customers_semicolons", raw_bytes("customers", lambda b: b.replace(b",", b";")), 65, "table 'customers'"),
    Case("customers_mixed_delimiters", raw_bytes("customers", _mixed_delimiters), 65, "table 'customers'"),
    Case("events_gzip_bytes_named_csv", _gzip_named_csv, 65, "table 'events'"),
    Case("customers_binary_garbage", raw_bytes("customers", lambda b: bytes(range(256)) * 20), 65, "table 'customers'"),
    Case("events_ids_padded_with_spaces", edit("events", _padded_ids), 65, "table 'events', column 'customer_id'"),
    Case("events_duplicated_rows", edit("events", lambda df: pd.concat([df, df], ignore_index=True)), 0,
         accepted="identical events can be real (two clicks in one second); the contract does not deduplicate"),
    Case("customers_crlf", raw_bytes("customers", lambda b: b.replace(b"\n", b"\r\n")), 0,
         accepted="Windows line endings are read like Unix ones"),
    Case("customers_huge_attribute_string", edit("customers", _huge_attribute), 0,
         accepted="a 1 MB attribute value is one category value like any other (no work grows with its length)"),
    # config and command line
    Case("config_unknown_key", config_edit(lambda r: r["scoring"].update({"risk_tierz": {}})), 78),
    Case("config_wrong_type", config_edit(lambda r: r["scoring"].update({"top_reasons": "three"})), 78),
    Case("config_not_yaml", lambda ctx: ctx.config.write_text("data: [unclosed\n"), 78),
    Case("config_missing", lambda ctx: ctx.config.unlink(), 78),
    Case("as_of_2099", args("--as-of", "2099-01-01"), 64, command="score"),
    Case("as_of_bad_format", args("--as-of", "01/02/2025"), 2),
    Case("as_of_before_anyone", args("--as-of", "2000-01-01"), 65, "table 'customers'", command="score"),
    Case("features_nobody_active", args("--as-of", "2000-01-01"), 65, "table 'customers'"),
    Case("out_is_a_file", _out_is_file, 2, command="score"),  # click refuses a file for a folder option
    Case("out_is_foreign_folder", _foreign_out, 64, command="score"),
    Case("model_version_missing", args("--model", "models:/churn-xgb/999"), 66, command="score"),
]


# --------------------------------------------------------------------------- running one case
def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` (hidden ones included)."""
    if not folder.exists():
        return {}
    if folder.is_file():
        return {".": hashlib.sha256(folder.read_bytes()).hexdigest()}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_churn(argv: list[str], cwd: Path, timeout: float = TIMEOUT_S, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})}
    return subprocess.run([sys.executable, "-c", "from churn.cli import main; main()", *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


@pytest.fixture(scope="module")
def base_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's generator, 60 customers, as CSV (the mutations edit text)."""
    from churn.generate import generate_demo, write_demo

    folder = tmp_path_factory.mktemp("fuzz_base")
    tables = generate_demo(n_customers=60, seed=11)
    write_demo({k: tables[k] for k in ("customers", "events", "transactions", "interactions")}, folder, fmt="csv")
    return folder


@dataclass
class Outcome:
    res: subprocess.CompletedProcess[str] | None  # None: hang (timed out)
    before: dict[str, str]
    after: dict[str, str]
    out: Path
    outputs: set[str]


def _run_case(case: Case, base: Path, store: Store, folder: Path) -> Outcome:
    data, out = folder / "data", folder / "outs" / "out"
    shutil.copytree(base, data)
    config = folder / "config.yaml"
    shutil.copy(store.config_path, config)
    ctx = Ctx(data, config, out, [])
    case.mutate(ctx)
    target = out if case.command == "score" else out / "features.parquet"
    argv = [case.command, "--config", str(config), "--data", str(data), "--out", str(target), *ctx.extra]
    if case.command == "features" and "--as-of" not in ctx.extra:
        argv += ["--as-of", "2025-06-01"]
    before = snapshot(out.parent)
    try:
        res: subprocess.CompletedProcess[str] | None = run_churn(argv, cwd=store.folder)
    except subprocess.TimeoutExpired:
        res = None
    outputs = {p.name for p in out.iterdir()} if out.is_dir() else set()
    return Outcome(res, before, snapshot(out.parent), out, outputs)


@pytest.fixture(scope="module")
def outcomes(base_data: Path, trained_store: Store, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every case run once, three subprocesses at a time (most fail at validation in about a second)."""
    from concurrent.futures import ThreadPoolExecutor

    root = tmp_path_factory.mktemp("fuzz_cases")
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {c.id: pool.submit(_run_case, c, base_data, trained_store, root / c.id) for c in CASES}
        return {k: f.result() for k, f in futures.items()}


FEATURE_OUTPUTS = {"features.parquet", "features.catalogue.csv", "summary.json"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input(case: Case, outcomes: dict[str, Outcome]) -> None:
    o = outcomes[case.id]
    assert o.res is not None, f"hang: no answer within {TIMEOUT_S}s"
    err = o.res.stderr
    assert "Traceback" not in err + o.res.stdout, err[-3000:]
    assert o.res.returncode in DOCUMENTED_EXIT_CODES, err[-3000:]
    assert o.res.returncode == case.rc, err[-3000:]
    if case.where:
        assert case.where in err, err[-3000:]
    staging = [k for k in o.after if k.startswith(".staging-") or "/.staging-" in k]
    assert not staging, f"staging left behind: {staging}"
    if o.res.returncode != 0:
        assert o.after == o.before, "a failed run changed --out"
        assert case.accepted is None
        return
    assert case.accepted, "accepted without a documented reason"
    expected = SCORE_OUTPUTS if case.command == "score" else FEATURE_OUTPUTS
    assert expected <= o.outputs, f"incomplete output: {sorted(o.outputs)}"
    summary = json.loads((o.out / "summary.json").read_text())
    table = "scores.parquet" if case.command == "score" else "features.parquet"
    rows = summary["n_scored"] if case.command == "score" else summary["rows"]
    assert rows == len(pd.read_parquet(o.out / table)) > 0


def test_suite_size_and_documentation() -> None:
    """At least 40 cases; every accepted one has its reason in README's table."""
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for c in CASES:
        assert (c.rc == 0) == (c.accepted is not None), c.id
        if c.accepted:
            assert f"`{c.id}`" in readme, f"accepted case {c.id} missing from README's table"
    assert np.isin([c.rc for c in CASES], sorted(DOCUMENTED_EXIT_CODES)).all()
