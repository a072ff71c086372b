"""`python -m energy`: the library warning policy first (importing torch warns), then the command line
(`energy.cli`)."""

import sys

from sw.core.quiet import silence_library_warnings

silence_library_warnings(sys.argv[1:])

from energy.cli import main  # noqa: E402  (after the warning policy, on purpose)

sys.exit(main())
