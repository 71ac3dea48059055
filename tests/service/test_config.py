"""``service.config``: ServiceConfig defaults and validation."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

from llama_workflows_asgi import ServiceConfig, workflow_router
from llama_workflows_asgi.api.deps import EdgeLimits
from llama_workflows_asgi.cli._runs import prune_runs
from llama_workflows_asgi.service.config import DEFAULT_HEARTBEAT_INTERVAL


def test_defaults_are_valid() -> None:
    config = ServiceConfig()
    assert config.lease_ttl > 2 * config.poll_interval
    assert config.idle_timeout == 60.0
    assert config.accept_context_api is False
    assert config.adopt_local_dead_owners is True


def test_it_is_immutable() -> None:
    config = ServiceConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lease_ttl = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "options",
    [
        {"lease_ttl": 2.0, "poll_interval": 1.0},
        {"lease_ttl": 1.0, "poll_interval": 1.0},
        {"lease_ttl": 0.5, "poll_interval": 1.0},
        {"poll_interval": 4.0},  # the default lease (8 s) is not more than 2 x 4 s
    ],
)
def test_lease_must_outlast_two_polls(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="lease_ttl must exceed twice poll_interval"):
        ServiceConfig(**options)


def test_a_lease_just_over_two_polls_is_accepted() -> None:
    config = ServiceConfig(lease_ttl=2.01, poll_interval=1.0)
    assert config.lease_ttl == 2.01


@pytest.mark.parametrize("field", ["max_resume_attempts", "claim_batch_size", "max_page_size"])
@pytest.mark.parametrize("value", [0, -1])
def test_counts_must_be_at_least_one(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=f"{field}.*must be >= 1"):
        ServiceConfig(**{field: value})
    assert getattr(ServiceConfig(**{field: 1}), field) == 1


@pytest.mark.parametrize(
    "options",
    [
        # A zero or negative poll makes the ownership loop spin without sleeping,
        # hammering the database with lease renewals and claims.
        {"poll_interval": 0.0},
        {"poll_interval": -1.0},
        {"stream_poll_interval": 0.0},
        {"stream_poll_interval": -0.5},
        {"lease_ttl": -1.0, "poll_interval": -1.0},
    ],
)
def test_polling_intervals_must_be_positive(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        ServiceConfig(**options)


@pytest.mark.parametrize(
    "options",
    [
        {"idle_timeout": -1.0},
        {"checkpoint_delay": -0.1},
        # A negative stop timeout makes every graceful stop give up at once,
        # leaving the runs owned instead of released.
        {"stop_timeout": -1.0},
    ],
)
def test_durations_must_not_be_negative(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        ServiceConfig(**options)


def test_zero_durations_are_accepted() -> None:
    config = ServiceConfig(idle_timeout=0.0, checkpoint_delay=0.0, stop_timeout=0.0)
    assert (config.idle_timeout, config.checkpoint_delay, config.stop_timeout) == (0, 0, 0)


def test_idle_timeout_none_keeps_idle_runs() -> None:
    assert ServiceConfig(idle_timeout=None).idle_timeout is None


def test_replace_validates_again() -> None:
    config = ServiceConfig(lease_ttl=0.5, poll_interval=0.1)
    with pytest.raises(ValueError, match="lease_ttl"):
        dataclasses.replace(config, poll_interval=0.3)


@pytest.mark.parametrize("depth", [0, -1, 201])
def test_the_json_depth_limit_stays_within_what_can_be_checkpointed(depth: int) -> None:
    with pytest.raises(ValueError, match="max_json_depth must be between 1 and 200"):
        ServiceConfig(max_json_depth=depth)


def test_unwritten_progress_age_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_unwritten_age must be > 0"):
        ServiceConfig(max_unwritten_age=0)
    assert ServiceConfig(max_json_depth=200, max_unwritten_age=0.1).max_json_depth == 200


def test_stream_defaults_are_the_one_heartbeat_interval() -> None:
    """Every layer that defaults a heartbeat interval takes it from ``service.config``."""
    assert EdgeLimits(64).heartbeat_interval == DEFAULT_HEARTBEAT_INTERVAL
    default = inspect.signature(workflow_router).parameters["sse_heartbeat_interval"].default
    assert default == DEFAULT_HEARTBEAT_INTERVAL


def test_prune_defaults_are_retentions() -> None:
    parameters = inspect.signature(prune_runs).parameters
    assert parameters["pause"].default == ServiceConfig().retention_pause
    assert parameters["batch_size"].default == ServiceConfig().retention_batch_size
