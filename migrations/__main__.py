"""``python -m llama_workflows_asgi.migrations upgrade --url ...``: see ``store.migrate.main``."""

from llama_workflows_asgi.store.migrate import main

raise SystemExit(main())
