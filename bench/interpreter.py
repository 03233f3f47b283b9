"""The interpreter our server runs on in the bench (``bench/run.py --python``).

CPython built with profile-guided and link-time optimisation runs Python code faster (a fifth faster on a
pure-Python loop on the bench VM). The Dockerfile's base image (``python:3.11-slim``) is built that way, and so
is Debian's ``/usr/bin/python3.11``; pyenv's default build, which this repository's ``.venv`` may sit on, is
not (client_credentials and introspection cost 5-11 % more CPU on it; bench/README.md). ``--python`` lets the
server run on the interpreter production would run, in a virtualenv of its own with this checkout installed in
it (editable, so the code measured is the checkout's), made once and made again when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path


def describe(python: str) -> str:
    """``Python 3.11.2 (/usr/bin/python3.11)``: what a report names the server's interpreter by."""
    version = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    return f"Python {version} ({Path(python).resolve()})"


def server_bin(python: str | None, root: Path) -> Path:
    """The bin/ folder whose ``python`` and ``granian`` run our server: this interpreter's own when ``python``
    is None, else a virtualenv for ``python`` under ``root/.venv-bench/``."""
    if python is None:
        return Path(sys.executable).parent
    base = Path(python).resolve()
    key = hashlib.sha256(str(base).encode()).hexdigest()[:10]
    venv = root / ".venv-bench" / f"{base.name}-{key}"
    stamp = venv / ".installed"
    wanted = hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text().strip() != wanted:
        print(f"making {venv} for {base} (pip install -e {root}) ...", flush=True)
        subprocess.run([str(base), "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-e", str(root)], check=True)
        stamp.write_text(wanted + "\n")
    return venv / "bin"
