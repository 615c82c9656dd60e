import os
import sys

# Benchmarks build their inputs with the tests' factories (tests/common.py),
# share the measuring helpers in benchmarks/measure.py and take their
# baselines from the repository's references/ folder (not installed with
# pyreid; appended so an installed pyreid keeps precedence).
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
if ROOT not in sys.path:
    sys.path.append(ROOT)
