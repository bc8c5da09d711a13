#!/usr/bin/env python3
"""kafka-console-producer STAND-IN (test only): cp-kafka's /usr/bin/kafka-console-producer (Kafka's
ConsoleProducer), for what the kit asks of it: `--bootstrap-server HOST:PORT --topic T --sync`, one message
per line of stdin. The other producer options Kafka's tool takes (`--request-required-acks`,
`--message-send-max-retries`, `--timeout`, `--request-timeout-ms`, `--producer-property K=V`) are accepted
and, where they bound time, honoured (max.block.ms bounds reaching a broker).

As Kafka's tool does with `--sync`, a send the broker refuses ends it: the producer's exception is printed
on stderr (`java.util.concurrent.ExecutionException: org.apache.kafka.common.errors.<Name>: <message>`,
ConsoleProducer's `e.printStackTrace`) and it exits 1. The stand-in broker's "KAFKA_STORAGE_ERROR" (a log
segment that cannot be written) is Kafka's KafkaStorageException with Kafka's message for it; no broker
reached in time is the producer's TimeoutException on the topic's metadata."""
import argparse
import sys

sys.path.insert(0, "/usr/local/lib/kafka-standin")
from kafka_wire import KafkaError, produce  # noqa: E402

#: The stand-in broker's error codes -> Kafka's exception and message (clients/.../errors/*.java, Errors.java).
EXCEPTIONS = {"KAFKA_STORAGE_ERROR": ("KafkaStorageException", "Disk error when trying to access log file on the disk.")}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="kafka-console-producer")
    parser.add_argument("--bootstrap-server", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--sync", action="store_true")
    parser.add_argument("--request-required-acks", default="-1")
    parser.add_argument("--message-send-max-retries", type=int, default=3)
    parser.add_argument("--timeout", type=int, default=1000)
    parser.add_argument("--request-timeout-ms", type=int, default=1500)
    parser.add_argument("--producer-property", action="append", default=[])
    args = parser.parse_args(argv)
    properties = dict(item.partition("=")[::2] for item in args.producer_property)
    block_seconds = int(properties.get("max.block.ms", "60000")) / 1000
    for line in sys.stdin:
        value = line.rstrip("\n")
        try:
            produce(args.bootstrap_server, args.topic, None, value, timeout=block_seconds)
        except KafkaError as exc:
            text = str(exc)
            code = text.split(":", 1)[0]
            if code in EXCEPTIONS:
                name, message = EXCEPTIONS[code]
            elif text.startswith("no broker answers") or "connection" in text:
                name, message = "TimeoutException", (f"Topic {args.topic} not present in metadata after "
                                                     f"{int(block_seconds * 1000)} ms.")
            else:
                name, message = "UnknownServerException", text
            sys.stderr.write(f"java.util.concurrent.ExecutionException: org.apache.kafka.common.errors.{name}: "
                             f"{message}\n\tat org.apache.kafka.clients.producer.internals.FutureRecordMetadata"
                             ".valueOrError(FutureRecordMetadata.java:97)\n")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
