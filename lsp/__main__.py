"""`python -m lsp`: the Tierhost LSP bridge on stdio (or `--tcp`)."""

import sys

from lsp.main import main

sys.exit(main())
