"""The ``churn`` command line: help, generate, features, and the exit codes of expected failures.

Exit codes (sysexits): 65 bad data, 66 missing input, 78 bad config; click usage errors exit 2.
A failing command must leave nothing behind in its output location.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from churn.generate import TABLES, generate_demo, write_demo
from tests.conftest import active_customer_ids, run_cli, small_config_dict, write_small_config

COMMAND_OPTIONS = {
    "generate": ["--customers", "--seed", "--start", "--end", "--format", "--out", "--config"],
    "features": ["--data", "--as-of", "--out", "--labels", "--config"],
    "train": ["--data", "--out", "--trials", "--timeout", "--config"],
    "score": ["--data", "--as-of", "--out", "--model", "--explain-all", "--config"],
    "demo": ["--out", "--customers", "--seed", "--trials", "--config"],
    "promote": ["--version", "--force", "--reason", "--data", "--config"],
    "rollback": ["--reason", "--config"],
}


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


# --------------------------------------------------------------------------------------------- help
def test_main_help_lists_every_command() -> None:
    res = run_cli(["--help"])
    assert res.exit_code == 0
    for cmd in COMMAND_OPTIONS:
        assert cmd in res.output
    assert "--verbose" in res.output and "--quiet" in res.output


@pytest.mark.parametrize("command", sorted(COMMAND_OPTIONS))
def test_subcommand_help_mentions_its_options(command: str) -> None:
    res = run_cli([command, "--help"])
    assert res.exit_code == 0, res.output
    assert f"Usage: main {command}" in res.output or f"Usage: churn {command}" in res.output
    for opt in COMMAND_OPTIONS[command]:
        assert opt in res.output, f"{command} --help does not mention {opt}"


# --------------------------------------------------------------------------------------------- generate
def test_generate_writes_tables_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    res = run_cli(["generate", "--customers", "50", "--seed", "3", "--out", out])
    assert res.exit_code == 0, res.output
    # the true campaign effects sit apart from the inputs, in _truth/ (issue 17)
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{t}.parquet" for t in TABLES]
                                                           + ["summary.json", "_truth"])
    assert [p.name for p in (out / "_truth").iterdir()] == ["treatment_effects.parquet"]
    summary = json.loads((out / "summary.json").read_text())
    expected = generate_demo(n_customers=50, seed=3)
    assert summary["command"] == "generate"
    assert summary["rows"] == {t: len(expected[t]) for t in TABLES}
    assert summary["customers"] == 50 and summary["seed"] == 3
    assert summary["input_hash"].startswith("sha256:")
    customers = pd.read_parquet(out / "customers.parquet")
    assert len(customers) == 50 and customers["customer_id"].is_unique
    pd.testing.assert_frame_equal(customers, expected["customers"], check_dtype=False)


def test_generate_csv(tmp_path: Path) -> None:
    res = run_cli(["generate", "--customers", "20", "--seed", "1", "--format", "csv", "--out", tmp_path / "csv"])
    assert res.exit_code == 0, res.output
    assert {f"{t}.csv" for t in TABLES} <= {p.name for p in (tmp_path / "csv").iterdir()}


BAD_GENERATE_DATES = [["--start", "2025-01-01", "--end", "2024-01-01"], ["--start", "someday"]]


@pytest.mark.parametrize("dates", BAD_GENERATE_DATES)
def test_generate_bad_dates_fail_without_writing(dates: list[str], tmp_path: Path) -> None:
    res = run_cli(["generate", "--customers", "20", *dates, "--out", tmp_path / "gen"])
    assert res.exit_code != 0
    assert "Traceback" not in res.output
    assert not (tmp_path / "gen").exists()


@pytest.mark.parametrize("dates", BAD_GENERATE_DATES)
def test_generate_bad_dates_are_usage_errors(dates: list[str], tmp_path: Path) -> None:
    res = run_cli(["generate", "--customers", "20", *dates, "--out", tmp_path / "gen"])
    assert res.exit_code == 2, res.output
    assert "unexpected" not in res.output


# --------------------------------------------------------------------------------------------- features
def test_features_one_row_per_active_customer(tmp_path: Path, demo_data_dir: Path,
                                              demo_customers: pd.DataFrame) -> None:
    out = tmp_path / "feat" / "snapshot.parquet"
    res = run_cli(["features", "--data", demo_data_dir, "--as-of", "2025-12-01", "--out", out, "--labels"])
    assert res.exit_code == 0, res.output
    frame = pd.read_parquet(out)
    t = pd.Timestamp("2025-12-01")
    assert frame["customer_id"].is_unique
    assert set(frame["customer_id"]) == active_customer_ids(demo_customers, t)
    assert (frame["cutoff"] == t).all()
    # label: churned within (T, T + 30 days]
    churn = demo_customers.set_index("customer_id")["churn_date"]
    expected = frame["customer_id"].map(lambda c: int(t < churn[c] <= t + pd.Timedelta(days=30))
                                        if pd.notna(churn[c]) else 0)
    assert frame["label"].tolist() == expected.tolist()

    catalogue = pd.read_csv(out.with_suffix(".catalogue.csv"))
    features = [c for c in frame.columns if c not in ("customer_id", "cutoff", "label")]
    assert catalogue["name"].tolist() == features
    summary = json.loads((out.parent / "summary.json").read_text())
    assert summary["rows"] == len(frame) and summary["features"] == len(features)
    assert summary["cutoff"] == "2025-12-01"


def test_features_without_labels(tmp_path: Path, demo_data_dir: Path) -> None:
    out = tmp_path / "nolabel.parquet"
    res = run_cli(["features", "--data", demo_data_dir, "--as-of", "2025-06-01", "--out", out])
    assert res.exit_code == 0, res.output
    assert "label" not in pd.read_parquet(out).columns


# --------------------------------------------------------------------------------------------- failures
@pytest.fixture(scope="module")
def small_csv_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("small_csv")
    write_demo(generate_demo(n_customers=60, seed=1), folder, fmt="csv")
    return folder


def _broken_copy(src: Path, dst: Path, table: str, change) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    df = pd.read_csv(dst / f"{table}.csv")
    change(df).to_csv(dst / f"{table}.csv", index=False)
    return dst


def _duplicate_first_customer(df: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([df, df.head(1)], ignore_index=True)


def _negative_amount(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[3, "amount"] = -9.99
    return df


BAD_DATA = {
    "duplicate_ids": ("customers", _duplicate_first_customer, "table 'customers', column 'customer_id'",
                      "duplicate customer ids"),
    "negative_amount": ("transactions", _negative_amount, "table 'transactions', column 'amount'", "negative amounts"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
@pytest.mark.parametrize("command", ["features", "train", "score"])
def test_bad_data_exits_65_and_writes_nothing(case: str, command: str, tmp_path: Path, small_csv_data: Path,
                                              request: pytest.FixtureRequest) -> None:
    table, change, where, problem = BAD_DATA[case]
    data = _broken_copy(small_csv_data, tmp_path / "data", table, change)
    # score checks the model before reading data (issue 16), so it needs a store with a model to get to the data
    config = request.getfixturevalue("trained_store").config_path if command == "score" else \
        write_small_config(tmp_path / "cfg")
    if command == "features":
        out = tmp_path / "out" / "features.parquet"
        args = ["features", "--data", data, "--as-of", "2025-06-01", "--out", out]
    else:
        out = tmp_path / "out"
        args = [command, "--data", data, "--out", out]
    res = run_cli([*args, "--config", config])
    assert res.exit_code == 65, res.output
    assert where in res.output and problem in res.output
    assert "Traceback" not in res.output
    assert not out.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert not (tmp_path / "cfg" / "mlruns").exists(), "failed before touching the model store"


def test_missing_data_folder_exits_66(tmp_path: Path) -> None:
    res = run_cli(["features", "--data", tmp_path / "nowhere", "--as-of", "2025-06-01", "--out", tmp_path / "f.parquet"])
    assert res.exit_code == 66
    assert "data folder not found" in res.output
    assert not (tmp_path / "f.parquet").exists()


@pytest.mark.parametrize(("section", "bad_key"), [("training", "n_cutof"), ("scoring", "budgett")])
def test_unknown_config_key_exits_78_naming_it(section: str, bad_key: str, tmp_path: Path,
                                               demo_data_dir: Path) -> None:
    raw = small_config_dict(tmp_path)
    raw[section][bad_key] = 6
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "f.parquet"
    res = run_cli(["features", "--data", demo_data_dir, "--as-of", "2025-06-01", "--out", out, "--config", config])
    assert res.exit_code == 78, res.output
    assert f"{section}.{bad_key}" in res.output
    assert str(config) in res.output
    assert not out.exists()


def test_missing_config_file_exits_78(tmp_path: Path, demo_data_dir: Path) -> None:
    res = run_cli(["features", "--data", demo_data_dir, "--as-of", "2025-06-01", "--out", tmp_path / "f.parquet",
                   "--config", tmp_path / "nope.yaml"])
    assert res.exit_code == 78
    assert "config file not found" in res.output


@pytest.mark.parametrize("bad_date", ["2025-13-01", "01/12/2025", "yesterday"])
def test_bad_as_of_date_is_a_usage_error(bad_date: str, tmp_path: Path, demo_data_dir: Path) -> None:
    out = tmp_path / "f.parquet"
    res = run_cli(["features", "--data", demo_data_dir, "--as-of", bad_date, "--out", out])
    assert res.exit_code == 2
    assert "--as-of" in res.output and "expected YYYY-MM-DD" in res.output and bad_date in res.output
    assert not out.exists()
