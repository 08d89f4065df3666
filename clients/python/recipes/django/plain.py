"""The Django recipe without Django: what `python manage.py warren_work`
does once Django is set up (import the app's stages, serve them). The
recipe's test runs this with the same `shop/stages.py`."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import shop.stages  # noqa: E402,F401  (registers the @stage handlers)
import warren_stage  # noqa: E402

warren_stage.serve()
