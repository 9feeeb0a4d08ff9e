"""The alerting rules pass `promtool check rules`, and each alert's unit test in alerts_test.yml passes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool missing (scripts/install-system-deps.sh)")


@needs_promtool
def test_rules_are_valid() -> None:
    r = subprocess.run([PROMTOOL, "check", "rules", "alerts.yml"], cwd=DASHBOARDS, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_every_alert_has_a_passing_unit_test() -> None:
    alerts = {r["alert"] for g in yaml.safe_load((DASHBOARDS / "alerts.yml").read_text())["groups"]
              for r in g["rules"] if "alert" in r}
    tested = {t["alertname"] for case in yaml.safe_load((DASHBOARDS / "alerts_test.yml").read_text())["tests"]
              for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert alerts == tested
    r = subprocess.run([PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=DASHBOARDS, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
