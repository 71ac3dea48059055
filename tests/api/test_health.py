"""``GET /health``: the full detail behind the host's auth, only the problem on the open route."""

from __future__ import annotations

import httpx
from fastapi import Depends, FastAPI, Header, HTTPException

from llama_workflows_asgi import MemoryWorkflowStore, StoreUnavailableError, workflow_router
from tests.support.servers import serving
from tests.support.workflows import GreetWorkflow


class _Unreachable(MemoryWorkflowStore):
    """A store whose database stops answering once told to."""

    away = False

    async def ping(self) -> None:
        if self.away:
            raise StoreUnavailableError("connection to 10.1.2.3:5432 refused")


async def key(x_key: str | None = Header(None)) -> None:
    if x_key != "secret":
        raise HTTPException(401, "no key")


async def test_the_open_health_route_names_the_problem_without_the_error_text() -> None:
    store = _Unreachable()
    router = workflow_router(store, workflows={"greet": GreetWorkflow()})
    app = FastAPI()
    app.include_router(router, prefix="/wf", dependencies=[Depends(key)])
    app.include_router(router.health_router())
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/health")).json() == {"status": "healthy"}
        store.away = True
        public = await http.get("/health")
        private = await http.get("/wf/health", headers={"x-key": "secret"})

    assert (public.status_code, private.status_code) == (503, 503)
    assert public.json() == {"status": "unhealthy", "detail": "The store is unreachable"}
    assert private.json()["detail"] == (
        "The store is unreachable: connection to 10.1.2.3:5432 refused"
    )
