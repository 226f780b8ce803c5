"""Shared pytest fixtures, one module per area so that areas do not edit the same file."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fixtures_data import *  # noqa: E402,F401,F403
from fixtures_model import *  # noqa: E402,F401,F403
from fixtures_eval import *  # noqa: E402,F401,F403
