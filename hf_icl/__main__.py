"""`python -m hf_icl` (so `accelerate launch -m hf_icl evaluate CONFIG` works)."""

import sys

from hf_icl.cli import main

sys.exit(main())
