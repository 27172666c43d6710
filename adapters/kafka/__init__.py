"""Kafka adapters (aiokafka): the topic catalogue, the event publisher, the workers' batch consumer, a topic reader.

Written against the Kafka protocol only: Apache Kafka, Redpanda, MSK and the embedded Tansu broker alike.
"""

from adapters.kafka.consumer import KafkaBatchConsumer, Received
from adapters.kafka.publisher import KafkaPublisher
from adapters.kafka.reader import TopicReader, read_to_end
from adapters.kafka.topics import DEFAULT_PARTITIONS, TopicSpec, catalogue, ensure_topics

__all__ = [
    "DEFAULT_PARTITIONS",
    "KafkaBatchConsumer",
    "KafkaPublisher",
    "Received",
    "TopicReader",
    "TopicSpec",
    "catalogue",
    "ensure_topics",
    "read_to_end",
]
