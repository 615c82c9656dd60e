import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# Tests import their shared helpers as `from common import ...`.
sys.path.insert(0, HERE)
# ... and the references (test oracles, published baselines) from the
# repository's references/ folder, which is not installed with pyreid.
# Appended, not inserted: an installed pyreid keeps precedence over the
# source folder next to references/.
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.append(ROOT)
