"""``python -m keras_margins.cli`` = ``keras-margins``."""

import sys

from keras_margins.cli import main

sys.exit(main())
