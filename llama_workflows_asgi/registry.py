"""The workflows a router serves, by name."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from workflows import Workflow
from workflows.events import Event

from .codec import EventRegistry
from .errors import WorkflowNotFoundError
from .versions import check_version, fingerprint


@dataclass
class RegisteredWorkflow:
    """A workflow served under ``name``, with the events callers may send it.

    ``version`` is what its runs record (see ``versions``); the default is the
    workflow's fingerprint.
    """

    name: str
    workflow: Workflow
    additional_events: tuple[type[Event], ...] = ()
    version: str = ""
    events: EventRegistry = field(init=False)

    def __post_init__(self) -> None:
        self.events = EventRegistry(self.declared_events, self.workflow.start_event_class)
        if not self.version:
            self.version = fingerprint(self.workflow)
        check_version(self.version)

    @property
    def declared_events(self) -> list[type[Event]]:
        """Events in step signatures plus ``additional_events``, without duplicates."""
        return list(dict.fromkeys([*self.workflow.events, *self.additional_events]))


class WorkflowRegistry:
    """Name-to-workflow map, in registration order."""

    def __init__(self) -> None:
        self._workflows: dict[str, RegisteredWorkflow] = {}

    def add(
        self,
        name: str,
        workflow: Workflow,
        additional_events: Iterable[type[Event]] = (),
        version: str | None = None,
    ) -> RegisteredWorkflow:
        """Register ``workflow`` as ``name`` (at ``version``, by default its fingerprint).

        Raises ``ValueError`` on a taken name or an invalid version.
        """
        if not name or "/" in name:
            raise ValueError(f"Invalid workflow name {name!r}: it must be non-empty without '/'")
        if name in self._workflows:
            raise ValueError(f"A workflow named {name!r} is already registered")
        if version is not None:
            check_version(version)
        entry = RegisteredWorkflow(name, workflow, tuple(additional_events), version or "")
        self._workflows[name] = entry
        return entry

    def get(self, name: str) -> RegisteredWorkflow:
        """The workflow registered as ``name``; raises ``WorkflowNotFoundError``."""
        try:
            return self._workflows[name]
        except KeyError:
            raise WorkflowNotFoundError(name) from None

    def find(self, name: str) -> RegisteredWorkflow | None:
        """The workflow registered as ``name``, or ``None``."""
        return self._workflows.get(name)

    def versions(self) -> dict[str, list[str]]:
        """The version served of each workflow, by name: what this process may claim."""
        return {name: [entry.version] for name, entry in self._workflows.items()}

    @property
    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._workflows)

    def __iter__(self) -> Iterator[RegisteredWorkflow]:
        return iter(list(self._workflows.values()))

    def __len__(self) -> int:
        return len(self._workflows)
