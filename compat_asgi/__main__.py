import sys

from compat_asgi.cli import main

sys.exit(main())
