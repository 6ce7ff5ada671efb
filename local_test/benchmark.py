#!/usr/bin/env python3
"""The benchmark's command: `.venv/bin/python local_test/benchmark.py [--quick] [--help]`.

The code is the package local_test/benchmark/ (its docstring says what is measured); this file only makes
it and the container's package importable and runs it. Run as a script, `import benchmark` finds the
package directory next to this file, not this file.
"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "container")]

from benchmark.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
