"""``python -m softkvm``: the CLI."""

from softkvm.cli import main

raise SystemExit(main())
