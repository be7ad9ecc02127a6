"""The deployment tests share ``deploy_compose.py`` (reading docker-compose.yml as Compose does).

With ``--import-mode=importlib`` pytest puts no test folder on ``sys.path``; this folder goes
there, so the test modules can ``import deploy_compose`` in every import mode.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
