"""scripts/gpu_speed.py at toy sizes on CPU, so a typo cannot waste a GPU lease."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_speed.py"


def test_cpu_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_speed", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--cpu-smoke", "--out", str(tmp_path), "--parts", "checks", "profile"])  # train, decode: test_bench
    checks = (tmp_path / "checks.md").read_text()
    assert "FAILED" not in checks and checks.count("| True |") == 6
    assert "## Profile" in (tmp_path / "cpu.md").read_text()
    assert "---- summary" in capsys.readouterr().out
