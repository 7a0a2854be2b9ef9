"""`keycam run` and `keycam bench pipeline` as a user runs them (subprocess / CliRunner)."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from tests.kits.edge import ROOT, SIM_YAML, write_config

KEYCAM = [sys.executable, "-c", "from keycam.cli import main; main()"]


def _run(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(KEYCAM + args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


@pytest.mark.timeout(120)
def test_keycam_run_sim_example_prints_records_and_a_summary(tmp_path):
    summary_path = tmp_path / "summary.json"
    proc = _run(["run", "--config", str(SIM_YAML), "--frames", "1000", "--metrics-port", "0",
                 "--summary-json", str(summary_path)])
    out, err = proc.communicate(timeout=100)
    assert proc.returncode == 0, err.decode()
    records = [json.loads(line) for line in out.decode().splitlines()]
    preds = [r for r in records if r["type"] == "prediction"]
    assert len(preds) == 1000 and all(len(r["top_k"]) == 3 for r in preds)
    assert "keycam run: 1000 frames" in err.decode() and "latency ms p50/p99" in err.decode()
    summary = json.loads(summary_path.read_text())
    assert summary["frames"] == 1000 and summary["stop_reason"] == "frames done"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_drains_flushes_and_exits_zero(tmp_path, device_dir, sig):
    cfg = write_config(tmp_path, device_dir, sinks=[{"type": "stdout"}], camera={"fps": 300},
                       pipeline={"stats_interval_s": 60.0})
    proc = _run(["run", "--config", str(cfg)])
    lines = b""
    deadline = time.monotonic() + 30
    while lines.count(b"\n") < 50 and time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 1)[0]:
            lines += os.read(proc.stdout.fileno(), 65536)
    assert lines.count(b"\n") >= 50, proc.stderr.read().decode() if proc.poll() is not None else "no output"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    text = (lines + out).decode()
    assert text.endswith("\n")                                 # flushed, no torn line
    records = [json.loads(line) for line in text.splitlines()]
    seqs = [r["seq"] for r in records if r["type"] == "prediction"]
    assert seqs == sorted(seqs) and len(seqs) >= 50
    assert records[-1]["type"] == "stats" and records[-1]["frames"] == len(seqs)   # final stats, after the drain
    assert "(signal)" in err.decode()


def test_run_reports_config_errors_in_one_line(tmp_path, device_dir):
    cfg = write_config(tmp_path, device_dir, model={"top_k": 99})
    proc = _run(["run", "--config", str(cfg), "--frames", "1"])
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert err.decode().strip().splitlines()[-1].startswith("Error: ") and "model.top_k" in err.decode()


@pytest.mark.timeout(120)
def test_bench_pipeline_writes_the_documented_json(tmp_path, device_dir):
    from tools.bench.pipeline import pipeline
    cfg = write_config(tmp_path, device_dir)
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(pipeline, ["--config", str(cfg), "--frames", "400", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["frames"] == 400 and data["fps"] > 0 and data["dropped"] == 0
    for stage in ("capture", "key", "infer", "egress"):
        assert 0 < data["latency_ms"][stage]["p50"] <= data["latency_ms"][stage]["p99"]
    assert data["rss_start_mb"] > 0 and data["rss_end_mb"] > 0
    assert f"bench pipeline: {cfg}: running 400 frames (as fast as possible) ..." in result.stderr


@pytest.mark.timeout(120)
def test_closed_stdout_is_counted_as_loss_logged_once_and_exits_3(tmp_path):
    """`keycam run ... | head -1`: the stdout sink stops at EPIPE; loss in the summary and exit status."""
    summary_path = tmp_path / "summary.json"
    proc = _run(["run", "--config", str(SIM_YAML), "--frames", "300", "--metrics-port", "0",
                 "--summary-json", str(summary_path)])
    first = proc.stdout.readline()
    proc.stdout.close()                                       # the reader goes away, like `head -1`
    err = proc.stderr.read().decode()
    proc.wait(timeout=100)
    assert json.loads(first)["type"] in ("prediction", "stats")
    assert proc.returncode == 3, err
    assert err.count("Broken pipe") <= 1 and "Traceback" not in err and "Exception ignored" not in err
    assert err.count("reader closed the pipe") == 1
    summary = json.loads(summary_path.read_text())
    lost = summary["sinks"]["stdout"]["lost"]
    assert lost > 0 and summary["sink_lost"] == lost
    assert f"stdout sink: {lost} record(s) not delivered" in err
    assert f"stdout {summary['sinks']['stdout']['sent']} delivered, {lost} lost" in err


@pytest.mark.timeout(60)
@pytest.mark.parametrize("quiet", [False, True])
def test_run_names_the_metrics_url_at_start_up_unless_quiet(tmp_path, device_dir, quiet):
    cfg = write_config(tmp_path, device_dir, metrics={"enabled": True, "port": 0})
    proc = _run((["-q"] if quiet else []) + ["run", "--config", str(cfg), "--frames", "20"])
    _, err = proc.communicate(timeout=50)
    assert proc.returncode == 0, err.decode()
    urls = [line for line in err.decode().splitlines() if line.startswith("metrics: http://127.0.0.1:")]
    assert len(urls) == (0 if quiet else 1) and (quiet or urls[0].endswith("/metrics"))
