"""Helpers shared by the notebook and browser tests (a plain module: conftest names can clash)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = ROOT / "artifacts"
EMULATOR_SECRET = "emulator-secret"


def checkout_env(tmp_path: Path) -> dict[str, str]:
    """The environment for child processes: no MP_* settings, the checkout importable.

    MP_CONFIG_FILE points at a file that does not exist, so a developer's own config file cannot
    leak real credentials into a test; the venv's bin comes first on PATH.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("MP_")}
    env["MP_CONFIG_FILE"] = str(tmp_path / "no-config.toml")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    )
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def install_kernelspec(root: Path) -> Path:
    """A ``python3`` kernelspec for this interpreter under ``root``; put ``root`` on JUPYTER_PATH.

    JUPYTER_PATH is searched before the user's and the system's kernel directories, so the kernel
    is this venv's Python whatever else is installed on the machine.
    """
    spec_dir = root / "kernels" / "python3"
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "metadata": {"debugger": False},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return root
