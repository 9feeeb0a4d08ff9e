"""Run every benchmark in turn (`make bench`); each writes bench/results/<name>.json."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["checkpoint_stall.py", "beacon_overhead.py", "layouts.py", "recovery.py", "ray_train_restart.py",
           "metrics_exporter.py", "init_memory.py", "report_scale.py", "flex_attention_cpu.py",
           "hang_matrix.py"]

if __name__ == "__main__":
    for b in BENCHES:
        print(f"== {b}", flush=True)
        subprocess.run([sys.executable, str(HERE / b)], check=True)
