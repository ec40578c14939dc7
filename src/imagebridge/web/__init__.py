"""Staff page of the initiating side: search, import, review, history, partner health.

Server-rendered Starlette routes with Jinja2 templates, plain CSS and a little
hand-written JavaScript (no front-end build step).  The composition root mounts
:func:`imagebridge.web.routes.staff_page`; :mod:`imagebridge.web.settings` is the
``[web]`` table.  This package imports nothing at import time so the
configuration can read its settings without loading the web stack.
"""
