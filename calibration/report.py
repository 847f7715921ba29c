"""The calibration report: the gate's rows as Parquet (polars) and as a Markdown table.

Both files hold figures and verdicts only (no timings, no dates), so two
calibrations from the same inputs write the same bytes.
"""

from __future__ import annotations

import pathlib

PARQUET = "reports/calibration.parquet"
MARKDOWN = "reports/calibration.md"
COLUMNS = ("precision", "scope", "output", "tokens", "cosine_min", "cosine_mean", "rel_l2", "max_abs", "finite",
           "verdict", "failures")


def write_report(root: pathlib.Path, rows: list[dict], section: dict) -> list[str]:
    """Write reports/calibration.{parquet,md} under `root`. Returns their relative paths."""
    import polars as pl

    (root / "reports").mkdir(exist_ok=True)
    schema = {"precision": pl.String, "scope": pl.String, "output": pl.String, "tokens": pl.Int64,
              "cosine_min": pl.Float64, "cosine_mean": pl.Float64, "rel_l2": pl.Float64, "max_abs": pl.Float64,
              "finite": pl.Boolean, "verdict": pl.String, "failures": pl.String}
    frame = pl.DataFrame([{k: r[k] for k in COLUMNS} for r in rows], schema=schema, orient="row")
    frame.write_parquet(root / PARQUET, compression="zstd", statistics=False)
    (root / MARKDOWN).write_text(markdown(rows, section), encoding="utf-8")
    return [PARQUET, MARKDOWN]


def markdown(rows: list[dict], section: dict) -> str:
    th = section["thresholds"]
    data = section["data"]
    lines = [
        "# Calibration report", "",
        f"Method `{section['method']}`; data: {data['source']} ({data['calibration_images']} calibration, "
        f"{data['held_out_images']} held-out images, split sha256 `{data['sha256'][:16]}`).",
        f"Gate: per-token cosine mean >= {th['mean_cosine']:g} and min >= {th['min_cosine']:g} against fp32; "
        "rel_l2 and max_abs are reported.", "",
        "| precision | scope | output | tokens | cosine min | cosine mean | rel L2 | max abs | verdict |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        verdict = r["verdict"] + (f": {r['failures']}" if r["failures"] else "")
        lines.append(f"| {r['precision']} | {r['scope']} | {r['output']} | {r['tokens']} | {r['cosine_min']:.7f} | "
                     f"{r['cosine_mean']:.7f} | {r['rel_l2']:.3e} | {r['max_abs']:.3e} | {verdict} |")
    lines += ["", "| precision | shipped | why not |", "|---|---|---|"]
    for precision, v in section["precisions"].items():
        lines.append(f"| {precision} | {'yes' if v['shipped'] else 'no'} | {'; '.join(v['failures'])} |")
    return "\n".join(lines) + "\n"
