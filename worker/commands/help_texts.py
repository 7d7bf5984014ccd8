"""The long help texts of the commands (`persistence-worker COMMAND --help`)."""

from __future__ import annotations

DESCRIPTION = """\
Consumes the workflow orchestrator's events from Kafka and keeps MongoDB's audit and
observability collections: validation_audit, workflow_results, incidents, telemetry_buffer.
All settings come from environment variables (MONGODB_URI, KAFKA_BOOTSTRAP_SERVERS, ...);
see docs/configuration.md, or `persistence-worker config` for the values in effect."""

RUN = """\
Start the consumers: validation, results, incidents and telemetry events are validated
and written to MongoDB in batches; bad records go to <topic>.dlq with headers naming the
error. Offsets are committed only once records are stored or dead-lettered. Logs are
JSON lines on stderr (console format on a terminal). SIGTERM/SIGINT drain and exit 0."""

INDEXES = """\
The indexes the persistence guide lists, with the TTL of each collection's retention
setting. `check` compares and changes nothing: each line says what `ensure` would do
(would create, would update TTL). `ensure` does it (idempotent). An index with the right
keys but other options is a conflict: reported, never dropped (exit 1)."""

INDEXES_CHECK = """\
Compare the expected and present indexes; change nothing. Each line: ok, would create
(missing), would update TTL (`ensure` sets it in place), or CONFLICT (same keys, other
options: drop or modify it by hand). Exit 0 if nothing is missing or conflicting."""

INDEXES_ENSURE = """\
Create the missing indexes and set changed TTLs in place (collMod); report conflicts
without touching them. Idempotent: safe to run at every deployment. Exit 0 when every
index is as expected afterwards, 1 on a conflict."""

CHECK = """\
The pre-flight (and the container's exec probe): Kafka answers and has every topic the worker
reads or writes (it creates none); MongoDB answers, its indexes, the write concern in force.
One line per finding (ok, warning, not ok); exit 0 if none is not ok, 1 if a topic is missing
or an index conflicts, 3 if a server does not answer within 1.5 s. Variables that look like
misspelled settings are reported as warnings."""

CONFIG = """\
Print every setting's value (secrets hidden) and whether it came from the environment or
is the default, then the variables that look like misspelled settings."""

QUERY = """\
The persistence guide's queries: a table on a terminal, or --json for scripts. Each query
is a subcommand with its own options (`query plan-history PLAN_ID`, `query workflows
--status FAILED`, `query incidents --severity HIGH`)."""

TELEMETRY = """\
The telemetry buffer (telemetry_buffer): what could not be sent to
KAFKA_TELEMETRY_DELIVERY_TOPIC when it arrived waits there.
  redeliver  the redelivery loop alone: sends what is due, on its backoff schedule
             (`run` also runs it unless REDELIVERY_ENABLED=false)
  replay     a one-off: re-sends the documents chosen by filters now, whatever their
             schedule (parked ones too, on request)
For dead-lettered Kafka records (<topic>.dlq), see `dlq replay`."""

REDELIVER = """\
Run the telemetry redelivery loop alone (`run` also runs it unless REDELIVERY_ENABLED=false):
deliver telemetry_buffer documents to KAFKA_TELEMETRY_DELIVERY_TOPIC, oldest first, each
claimed with a lease so that several replicas never send one document at the same time. Once
Kafka acknowledges it (acks=all) a document stays only as a tombstone for
TELEMETRY_DEDUP_WINDOW_S, so the same event read again is not delivered twice; a failure reschedules it
with exponential backoff; after TELEMETRY_MAX_DELIVERY_ATTEMPTS it is parked. Logs:
telemetry_redelivered, telemetry_redelivery_failed, telemetry_parked. Without --once it runs
until SIGTERM/SIGINT (exit 0)."""

REPLAY = """\
Re-send buffered telemetry chosen by the filters to KAFKA_TELEMETRY_DELIVERY_TOPIC (or
--to-topic), with the loop's own claims: a document the loop or another replay holds is
skipped, never sent twice at once. A sent document becomes a tombstone as a redelivered one
does (--keep: it stays pending). Parked documents are left out unless --include-parked or
--parked-only; backoff schedules are ignored. --dry-run prints the count and the first rows
and sends nothing. Ctrl-C finishes the batch in hand and stops; nothing is lost, nothing
stays claimed. Progress and summary count sent, failed and skipped (held by another worker,
or gone). Exit 0 if every chosen document was sent, 1 if some were not."""

DLQ = """\
Dead-letter topics (<input topic>KAFKA_DLQ_SUFFIX): the Kafka records the worker could not
store, with x-error-* headers saying why. For buffered telemetry, see `telemetry`."""

DLQ_REPLAY = """\
Read dead-letter topics (<input topic>KAFKA_DLQ_SUFFIX, all four unless --route) up to their
end at the start, keep the records whose x-error-type is chosen (--error-type, all if not
given) and re-publish each one's key, value and headers to its source topic, without our
x-error-*/x-source-*/x-failed-at headers and with x-replayed-from; or, with --direct,
validate and write them straight to MongoDB through the worker's writers. Stored records
are stored once however often they are replayed. A record that fails validation again
stays dead-lettered and is counted as still_dead; records of other types are not_chosen.
Offsets are committed per batch under the run's own consumer group (default
<KAFKA_CONSUMER_GROUP>-dlq-replay[-<error types>]), so the next run continues where this
one stopped. Exit 0 if every chosen record was replayed, 1 if not."""

COMPLETION = """\
Print a shell completion script for the commands and their options. For bash:
  persistence-worker completion bash > /etc/bash_completion.d/persistence-worker
For zsh, into a directory of your $fpath:
  persistence-worker completion zsh > "${fpath[1]}/_persistence-worker\""""
