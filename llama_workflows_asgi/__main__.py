"""``python -m llama_workflows_asgi``: the command line (see ``llama_workflows_asgi.cli``)."""

from .cli import main

main()
