import sys

from mcp_server.stdio import main

sys.exit(main())
