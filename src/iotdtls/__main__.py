"""`python -m iotdtls`: the command line (see `iotdtls.cli`)."""

from iotdtls.cli import main

raise SystemExit(main())
