"""scripts/gpu_session.sh: what can be checked without a GPU, so a typo cannot waste a lease."""

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_session.sh"


def test_refuses_a_call_longer_than_the_device_allows(tmp_path):
    # the device tool kills a call at 600 s before the script packs what comes back: refuse at once
    r = subprocess.run(["bash", str(SCRIPT), str(tmp_path), "640"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "SECONDS=640" in r.stderr and "at most 580" in r.stderr
    assert not any(tmp_path.iterdir())  # nothing started


def test_syntax():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
