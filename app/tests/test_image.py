"""The image definition: hadolint-clean, non-root, exec-form entrypoint, pinned base."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parent.parent / "Dockerfile"


def test_dockerfile_is_clean_under_hadolint() -> None:
    result = subprocess.run(
        ["hadolint", "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_final_stage_runs_as_non_root_with_exec_form_entrypoint_and_pinned_base() -> None:
    final = DOCKERFILE.read_text().split("\nFROM ")[-1]
    assert re.match(r"python:\d+\.\d+\.\d+-slim-\w+\n", final)
    assert re.search(r"^USER 10001$", final, re.M)
    assert 'ENTRYPOINT ["alle"]' in final
    assert "pip install" not in final and "apt-get" not in final


def test_every_runtime_dependency_is_pinned() -> None:
    lines = (DOCKERFILE.parent / "requirements.txt").read_text().splitlines()
    requirements = [line for line in lines if line and not line.startswith("#")]
    assert requirements and all(re.match(r"^[\w.\-\[\]]+==[\w.]+$", line) for line in requirements)
