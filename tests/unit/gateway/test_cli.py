"""``adept up`` / ``adept ask`` failure paths that need no running platform."""

from __future__ import annotations

from typer.testing import CliRunner

from tools.cli import app

runner = CliRunner()


def test_up_reports_every_config_error_before_starting_anything(tmp_path):
    r = runner.invoke(app, ["up", "--data-dir", str(tmp_path), "--port", "0", "-s", "gateway.colour=red"])
    assert r.exit_code == 2
    assert "gateway.port" in r.output and "gateway.colour" in r.output
    assert not (tmp_path / "ray").exists()


def test_ask_without_server_is_one_clear_line(monkeypatch):
    monkeypatch.delenv("ADEPT_URL", raising=False)
    r = runner.invoke(app, ["ask", "--url", "http://127.0.0.1:9", "--api-key", "adept-x", "hello"])
    assert r.exit_code == 7
    assert "cannot reach Adept at http://127.0.0.1:9" in r.output


def test_ask_without_key(monkeypatch, tmp_path):
    monkeypatch.delenv("ADEPT_API_KEY", raising=False)
    r = runner.invoke(app, ["ask", "--data-dir", str(tmp_path), "hello"])
    assert r.exit_code == 3 and "no API key" in r.output


def test_http_errors_map_to_exit_codes():
    from tools.cli.serve_cmd import _error_from

    err = _error_from(404, b'{"error": {"message": "The model \'x\' does not exist"}}')
    assert err.exit_code == 4 and "does not exist" in err.message and "HTTP 404" in err.message
    assert _error_from(429, b"{}").exit_code == 6
    assert _error_from(502, b"<html>").exit_code == 7
