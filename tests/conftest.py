import sys
from pathlib import Path

# Test helpers (e.g. ``oddfiles``) are imported as top-level modules from any test directory.
sys.path.insert(0, str(Path(__file__).resolve().parent))
