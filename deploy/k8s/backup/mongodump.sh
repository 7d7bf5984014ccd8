#!/bin/sh
# Back up the worker's collections with mongodump, in the persistence guide's order: the
# post-mortem record first (workflow_results, incidents), then the rest (validation_audit,
# telemetry_buffer). One gzip archive per collection under $BACKUP_DIR/<UTC stamp>/.
# A run that fails part-way leaves <stamp>.partial/, with PRIORITY_COMPLETE once the first two
# are safe. Retention: the newest $BACKUP_KEEP complete dumps are kept, older ones and partial
# dumps older than the newest complete one are deleted.
# Used by the CronJob (k8s/backup-cronjob.yaml) and the compose profile `backup`.
set -eu
: "${MONGODB_URI:?MONGODB_URI must be set}"
MONGODB_DATABASE="${MONGODB_DATABASE:-orchestrator}"
BACKUP_DIR="${BACKUP_DIR:-/backup}"
BACKUP_KEEP="${BACKUP_KEEP:-7}"
PRIORITY="workflow_results incidents"
REST="validation_audit telemetry_buffer"

stamp=$(date -u +%Y%m%dT%H%M%SZ)
work="$BACKUP_DIR/$stamp.partial"
mkdir -p "$work"

dump() {
    mongodump --uri="$MONGODB_URI" --db="$MONGODB_DATABASE" --collection="$1" \
        --gzip --archive="$work/$1.archive.gz" --quiet
    echo "backup: $1 -> $work/$1.archive.gz"
}

for collection in $PRIORITY; do dump "$collection"; done
touch "$work/PRIORITY_COMPLETE"
for collection in $REST; do dump "$collection"; done
mv "$work" "$BACKUP_DIR/$stamp"
echo "backup: complete $BACKUP_DIR/$stamp"

# Retention (stamps sort by time): complete dumps beyond the newest $BACKUP_KEEP, then partial
# dumps older than this complete one.
ls -1 "$BACKUP_DIR" | grep -E '^[0-9]{8}T[0-9]{6}Z$' | sort -r | tail -n +"$((BACKUP_KEEP + 1))" |
    while read -r old; do rm -rf "${BACKUP_DIR:?}/$old"; echo "backup: removed $old"; done
ls -1 "$BACKUP_DIR" | grep -E '^[0-9]{8}T[0-9]{6}Z\.partial$' | while read -r partial; do
    if [ "${partial%.partial}" \< "$stamp" ]; then rm -rf "${BACKUP_DIR:?}/$partial"; echo "backup: removed $partial"; fi
done
