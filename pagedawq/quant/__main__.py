"""``python -m pagedawq.quant MODEL OUTPUT_DIR [options]``."""
import sys

from pagedawq.quant.cli import main

sys.exit(main())
