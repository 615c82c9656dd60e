import os
import sys

# Benchmarks build their inputs with the tests' factories (tests/common.py)
# and share the measuring helpers in benchmarks/measure.py.
HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
