"""`python manage.py warren_work`: the Django recipe's exec program.

    stages:
      invoice:
        exec: { command: [python, manage.py, warren_work], env: { DJANGO_SETTINGS_MODULE: shop.settings } }

manage.py has set Django up (settings, apps, the ORM) before `handle`;
importing the stages registers them; `serve()` runs until warren closes
stdin. Database connections: each handler thread gets its own; closing
stale ones around each message is Django's `close_old_connections`, which
the stages may call first thing.
"""

from django.core.management.base import BaseCommand

import warren_stage


class Command(BaseCommand):
    help = "Serve this app's warren stages (an exec stage's program)"

    def handle(self, *args, **options):
        import shop.stages  # noqa: F401  (registers the @stage handlers)

        warren_stage.serve()
