"""``python -m recbole_llmplugin.config``: writes the default property files from the table of properties
(``--check``: only says which differ, exit 1)."""

import sys

from recbole_llmplugin.config.properties import main

sys.exit(main())
