"""``python -m dkron_lab.cli``: the same program as ``dkron-lab``."""

from dkron_lab.cli import main

main()
