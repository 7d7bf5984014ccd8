"""The topics the worker needs and creates none of, compared with those the cluster has.

Every route's input topic and its dead-letter topic (a missing one fails every batch that
dead-letters a record), and the telemetry delivery topic when redelivery runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from worker.settings import RouteName, Settings


@dataclass(frozen=True, slots=True)
class NeededTopic:
    name: str
    role: str
    """What the worker uses it for, in a few words ("dead letters of incidents")."""
    consumed: bool
    """Read by the consumer group: its partitions bound how many replicas share its records."""


@dataclass(frozen=True, slots=True)
class TopicFinding:
    topic: NeededTopic
    partitions: int | None
    """None: the cluster has no such topic."""

    def fewer_partitions_than(self, replicas: int | None) -> bool:
        """A consumed topic with fewer partitions than `replicas`: the replicas beyond read none of it."""
        if replicas is None or self.partitions is None:
            return False
        return self.topic.consumed and self.partitions < replicas


def needed_topics(settings: Settings) -> list[NeededTopic]:
    """The topics `settings` name, in route order: input, then its dead letters; the delivery topic last."""
    topics = []
    for route in RouteName:
        topic = settings.topic_for(route)
        topics.append(NeededTopic(topic, f"input of {route}", consumed=True))
        topics.append(NeededTopic(settings.dlq_topic(topic), f"dead letters of {route}", consumed=False))
    if settings.redelivery_enabled:
        delivery = settings.kafka_telemetry_delivery_topic
        topics.append(NeededTopic(delivery, "telemetry delivery", consumed=False))
    return topics


def compare_topics(needed: list[NeededTopic], cluster: Mapping[str, int]) -> list[TopicFinding]:
    """Each needed topic with its partition count on the cluster (None where it does not exist)."""
    return [TopicFinding(topic, cluster.get(topic.name)) for topic in needed]
