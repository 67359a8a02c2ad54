"""One frozen configuration for a node, built once at the edge (CLI flags, ``DKRON_*``
environment variables, ``dkron.yml``; or the Jupyter extension's traits) and read everywhere else.

Each option is declared once, on its ``Config`` field (``schema.py``): type, default, parser
(``values.py``), the form it expects, help, and how it is given as a flag (``Option``,
``options.py``). ``OPTIONS`` is read from those fields; the config-file keys, the ``DKRON_*``
variables, the flags of ``dkron-lab agent`` (``cli/node.py``) and the ``c.DkronLab`` traits
(``jupyter/extension.py``) are all made from ``OPTIONS``. Field names are Dkron's flag names
with ``-`` turned into ``_``. Sources and precedence: ``loading.py``.

Loading follows Dkron (viper): a flag given on the command line beats the environment variable
``DKRON_<KEY_UPPER_WITH_UNDERSCORES>``, which beats the config file, which beats the default.
The config file is ``--config PATH``, else the first ``dkron.json|yaml|yml`` found in
``/etc/dkron``, ``$HOME/.dkron`` and ``./config``, in that order, as Dkron searches them.
Keys are the flag names, case-insensitive, with ``-`` or ``_``. Dkron keys that dkron-lab does
not act on yet are accepted with one warning; unknown keys are warned about with the nearest
known key; a value of the wrong form is a ``ValidationError`` naming the key, where it came from
and the form expected.
"""

from dkron_lab.config.loading import (
    CONFIG_FILE_NAMES,
    NOT_YET_SUPPORTED,
    SEARCH_DIRS,
    LoadedConfig,
    env_name,
    find_config_file,
    load_config,
    read_config_file,
    resolve_config,
)
from dkron_lab.config.options import FlagStyle, Option
from dkron_lab.config.schema import OPTIONS, Config
from dkron_lab.config.values import FSYNC_MODES, LOG_LEVELS, NOTIFY_ON, split_host_port

__all__ = [
    "CONFIG_FILE_NAMES",
    "FSYNC_MODES",
    "LOG_LEVELS",
    "NOTIFY_ON",
    "NOT_YET_SUPPORTED",
    "OPTIONS",
    "SEARCH_DIRS",
    "Config",
    "FlagStyle",
    "LoadedConfig",
    "Option",
    "env_name",
    "find_config_file",
    "load_config",
    "read_config_file",
    "resolve_config",
    "split_host_port",
]
