"""Configuration mistakes are reported as sentences, not tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "SECRET_KEY",
                                                               "ENVIRONMENT", "SMTP_PORT"}}
    return subprocess.run([sys.executable, "-m", "newsletter", *args], cwd=tmp_path,
                          env={**base, "DATA_DIR": str(tmp_path / "var"), **env},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("env", "says"), [
    ({"SMTP_PORT": "abc"}, "SMTP_PORT"),
    ({"ENVIRONMENT": "production"}, "SECRET_KEY"),
    ({"ENVIRONMENT": "prod"}, "ENVIRONMENT"),
])
def test_bad_settings_are_named_without_a_traceback(tmp_path, env, says):
    result = run_cli(tmp_path, "init", **env)
    assert result.returncode == 2
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_init_never_prints_the_database_password(tmp_path):
    # Nothing listens on port 1: the connection fails, and the error must not leak.
    result = run_cli(tmp_path, "init",
                     DATABASE_URL="postgresql://roundup:s3cretpw@127.0.0.1:1/roundup")
    assert result.returncode == 1
    assert "s3cretpw" not in result.stdout + result.stderr
    assert "cannot use the database" in result.stderr
    assert "Traceback" not in result.stderr
