"""Kafka adapters (aiokafka): the topic catalogue, the event publisher and the workers' batch consumer.

Written against the Kafka protocol only: Apache Kafka, Redpanda, MSK and the embedded Tansu broker alike.
"""

from adapters.kafka.consumer import KafkaBatchConsumer, Received
from adapters.kafka.publisher import KafkaPublisher
from adapters.kafka.topics import DEFAULT_PARTITIONS, TopicSpec, catalogue, ensure_topics

__all__ = [
    "DEFAULT_PARTITIONS",
    "KafkaBatchConsumer",
    "KafkaPublisher",
    "Received",
    "TopicSpec",
    "catalogue",
    "ensure_topics",
]
