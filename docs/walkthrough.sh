#!/usr/bin/env bash
# The README's walkthrough as one script: a donation of 3 laptops from pickup to a school, and to
# certified recycling, through the public HTTP APIs of a running `./dev up`. Needs curl and jq.
set -euo pipefail
cd "$(dirname "$0")/.."

INTAKE=${INTAKE:-http://127.0.0.1:8001}
DIAG=${DIAG:-http://127.0.0.1:8002}
ALLOC=${ALLOC:-http://127.0.0.1:8003}
RECYC=${RECYC:-http://127.0.0.1:8004}
CUSTODY=${CUSTODY:-http://127.0.0.1:8006}
RUN=$(date +%s)
NOW=$(date -u +%Y-%m-%dT%H:%M:%SZ)

step() { printf '\n\033[1m# %s\033[0m\n' "$*"; }
api() { # KEY METHOD URL [JSON]
  local key=$1 method=$2 url=$3 body=${4:-}
  curl -fsS -X "$method" "$url" -H "X-API-Key: $key" -H 'Content-Type: application/json' ${body:+-d "$body"}
}
until_true() { for _ in $(seq 1 60); do eval "$1" && return 0; sleep 1; done; echo "timed out: $1" >&2; return 1; }

step "Keys: one per partner and role (printed once, stored hashed)"
DONOR=$(./dev key donor "acme-$RUN" "Acme Consulate")
STAFF=$(./dev key staff "staff-$RUN" "Lena (warehouse)")
SCHOOL=$(./dev key recipient "school-$RUN" "Rosa Parks School")

step "The donor requests a pickup"
PICKUP=$(api "$DONOR" POST "$INTAKE/pickups" '{
  "address": {"street": "Rue de la Loi 42", "postal_code": "1040", "city": "Brussels", "country": "BE"},
  "contact": {"name": "Jo Peeters", "email": "it@acme.example"},
  "window": {"start": "2030-03-02T08:00:00Z", "end": "2030-03-06T17:00:00Z"},
  "expected": {"laptop": 3}}' | jq -r .pickup_id)
echo "pickup $PICKUP"

step "Staff schedule it, scan three laptops (one has no readable serial) and close it"
api "$STAFF" POST "$INTAKE/pickups/$PICKUP/schedule" '{"scheduled_for": "2030-03-03T09:00:00Z"}' | jq -c '{status, scheduled_for}'
scan() { api "$STAFF" POST "$INTAKE/pickups/$PICKUP/devices" "$1" | jq -r .device_id; }
D1=$(scan "{\"serial_number\": \"SN-$RUN-1\", \"category\": \"laptop\", \"make\": \"HP\", \"model\": \"EliteBook 840 G5\", \"weight_kg\": 1.5, \"location\": \"Brussels\"}")
D2=$(scan "{\"serial_number\": \"SN-$RUN-2\", \"category\": \"laptop\", \"make\": \"HP\", \"model\": \"EliteBook 840 G5\", \"weight_kg\": 1.5, \"location\": \"Brussels\"}")
D3=$(scan '{"category": "laptop", "make": "Lenovo", "model": "T440", "weight_kg": 1.9, "location": "Brussels"}')
until_true "api \"$STAFF\" GET \"$CUSTODY/devices/$D3\" >/dev/null 2>&1"
api "$STAFF" GET "$CUSTODY/devices/$D3" | jq -c '{asset_tag, asset_tag_generated, serial_number}'
api "$STAFF" POST "$INTAKE/pickups/$PICKUP/complete" '{}' | jq -c '{status, devices_received}'

step "Diagnostics: test reports decide refurbish (D1, D2) or recycle (D3, does not boot)"
until_true "[ \$(api \"$STAFF\" GET \"$DIAG/devices?state=received\" | jq '[.[] | select(.device_id==\"$D3\")] | length') = 1 ]"
report() { # DEVICE DRIVE BOOT
  api "$STAFF" POST "$DIAG/devices/$1/reports" "{
    \"specs\": {\"cpu_model\": \"i5-8350U\", \"cpu_cores\": 4, \"ram_gb\": 8, \"battery_health_pct\": 85,
              \"drives\": [{\"serial\": \"$2\", \"kind\": \"ssd\", \"capacity_gb\": 256}]},
    \"tests\": {\"boot\": \"$3\", \"cpu\": \"pass\", \"memory\": \"pass\", \"storage\": \"pass\", \"screen\": \"pass\",
              \"keyboard\": \"pass\", \"battery\": \"pass\", \"ports\": \"pass\", \"network\": \"pass\"},
    \"cosmetic\": {\"casing\": \"light\", \"screen_scratches\": \"none\", \"cracked\": false},
    \"location\": \"Brussels, bench 3\"}" | jq -c '{decision, reason, functional_grade, cosmetic_grade}'
}
report "$D1" "DRV-$RUN-1" pass
report "$D2" "DRV-$RUN-2" pass
report "$D3" "DRV-$RUN-3" fail

step "Data erasure per drive (NIST SP 800-88): purge for reuse, destroy for recycling"
erase() { # DEVICE DRIVE METHOD
  api "$STAFF" POST "$DIAG/devices/$1/erasures" "{\"drive_serial\": \"$2\", \"method\": \"$3\",
    \"technique\": \"$([ "$3" = destroy ] && echo shredding || echo 'NVMe secure erase')\", \"tool\": \"nwipe\",
    \"tool_version\": \"0.37\", \"verified\": true, \"verification\": \"full read-back\",
    \"performed_at\": \"$NOW\", \"location\": \"Brussels, bench 3\"}" | jq -c '{state, certificate_id}'
}
erase "$D1" "DRV-$RUN-1" purge
erase "$D2" "DRV-$RUN-2" purge
erase "$D3" "DRV-$RUN-3" destroy
CERT=$(api "$STAFF" GET "$DIAG/devices/$D1" | jq -r .certificate_id)
api "$STAFF" GET "$DIAG/certificates/$CERT" | jq -c '{certificate_id, make, model, serial_number, drives: [.drives[] | {serial, method, tool, verified}]}'

step "A school asks for two laptops; staff run the matching"
REQUEST=$(api "$SCHOOL" POST "$ALLOC/requests" '{"quantity": 2, "category": "laptop",
  "min_specs": {"ram_gb": 8}, "purpose": "Coding club for newly arrived pupils", "priority": 2}' | jq -r .request_id)
until_true "[ \$(api \"$STAFF\" GET \"$ALLOC/stock\" | jq '[.[] | select(.device_id==\"$D1\" or .device_id==\"$D2\")] | length') = 2 ]"
api "$STAFF" POST "$ALLOC/matching/run" '{}' | jq -c '.allocations'
api "$SCHOOL" GET "$ALLOC/requests/$REQUEST" | jq -c '{status, allocated}'

step "Ship with a bill of lading; the school accepts the delivery"
SHIPMENT=$(api "$STAFF" POST "$ALLOC/shipments" "{\"recipient_id\": \"school-$RUN\", \"device_ids\": [\"$D1\", \"$D2\"], \"carrier\": \"Bpost\"}" | jq -r .shipment_id)
api "$SCHOOL" POST "$ALLOC/shipments/$SHIPMENT/accept" '{"accepted_by": "Ms. Diallo"}' | jq -c '{bill_of_lading, status}'

step "An illegal transition is refused and recorded: shipping D1 twice"
curl -sS -X POST "$ALLOC/shipments" -H "X-API-Key: $STAFF" -H 'Content-Type: application/json' \
  -d "{\"recipient_id\": \"school-$RUN\", \"device_ids\": [\"$D1\"]}" | jq -c .
api "$STAFF" GET "$ALLOC/refusals?limit=1" | jq -c '.[0] | {action, state, reason}'

step "Years later D2 comes back at end of life"
api "$SCHOOL" POST "$ALLOC/devices/$D2/return" '{"reason": "end_of_life"}' | jq -c '{state}'

step "Recycling dismantles D3 and the returned D2 (its drive is shredded) and ships a lot"
until_true "[ \$(api \"$STAFF\" GET \"$RECYC/devices\" | jq '[.[] | select(.device_id==\"$D2\" or .device_id==\"$D3\")] | length') = 2 ]"
FRACTIONS='{"plastics_kg": 0.5, "ferrous_kg": 0.3, "aluminium_kg": 0.2, "circuit_boards_kg": 0.25, "batteries_kg": 0.3}'
api "$STAFF" POST "$RECYC/devices/$D3/dismantle" "{\"fractions\": $FRACTIONS, \"hazardous_parts\": [\"li-ion battery\"], \"location\": \"Brussels\"}" | jq -c '{state}'
api "$STAFF" POST "$RECYC/devices/$D2/dismantle" "{\"fractions\": $FRACTIONS, \"hazardous_parts\": [\"li-ion battery\"], \"location\": \"Brussels\",
  \"storage_destroyed\": [{\"drive_serial\": \"DRV-$RUN-2\", \"method\": \"destroy\", \"technique\": \"shredding\", \"tool\": \"HSM shredder\",
  \"tool_version\": \"1\", \"verified\": true, \"verification\": \"visual\", \"operator\": \"staff-$RUN\",
  \"performed_at\": \"$NOW\", \"location\": \"Brussels\"}]}" | jq -c '{state}'
api "$STAFF" POST "$RECYC/lots" "{\"recycler\": {\"name\": \"Recupel Metals NV\", \"certification\": \"WEEELABEX\"},
  \"device_ids\": [\"$D2\", \"$D3\"]}" | jq -c '{bill_of_lading, total_kg, certificates}'

step "The donor's custody view: every device, its stage and its history"
until_true "[ \$(api \"$DONOR\" GET \"$CUSTODY/devices\" | jq '[.[] | select(.stage==\"recycled\")] | length') = 2 ]"
api "$DONOR" GET "$CUSTODY/devices" | jq -c '.[] | {asset_tag, stage, recipient_id, erasure_certificate_id, recycling_certificate_id, history: [.history[].event_type]}'

step "The donor downloads D2's certificates as PDF; anyone checks them against the topics"
api "$DONOR" GET "$CUSTODY/devices/$D2/certificates/erasure" | jq -c '{certificate_id, erasures: [.erasures[] | {drive_serial, method}], evidence: .evidence.digest}'
curl -sS -f -H "X-API-Key: $DONOR" "$CUSTODY/devices/$D2/certificates/recycling?format=pdf" -o "${TMPDIR:-/tmp}/recycling-$RUN.pdf"
echo "recycling certificate: $(wc -c <"${TMPDIR:-/tmp}/recycling-$RUN.pdf") bytes of PDF"
DIGEST=$(api "$DONOR" GET "$CUSTODY/devices/$D2/certificates/recycling" | jq -r .evidence.digest)
curl -sS -f "$CUSTODY/verify/$D2?digest=$DIGEST&format=json" | jq -c '{stage, digest_matches}'
uv run --frozen python -m tools.verify_certificate "$D2" --digest "$DIGEST" | tail -1

step "The workbench: a donated machine describes, tests and erases itself, then posts the evidence"
if [ "$(id -u)" = 0 ] && command -v losetup >/dev/null && losetup --find >/dev/null 2>&1; then
  STICK=$(mktemp -d)
  ./dev key workbench "bench-$RUN" "Workbench, bench 7" >"$STICK/workbench.key"   # never printed
  PICKUP2=$(api "$DONOR" POST "$INTAKE/pickups" '{
    "address": {"street": "Rue de la Loi 42", "postal_code": "1040", "city": "Brussels", "country": "BE"},
    "contact": {"name": "Jo Peeters", "email": "it@acme.example"},
    "window": {"start": "2030-04-02T08:00:00Z", "end": "2030-04-06T17:00:00Z"},
    "expected": {"other": 1}}' | jq -r .pickup_id)
  api "$STAFF" POST "$INTAKE/pickups/$PICKUP2/schedule" '{"scheduled_for": "2030-04-03T09:00:00Z"}' >/dev/null
  D4=$(api "$STAFF" POST "$INTAKE/pickups/$PICKUP2/devices" "{\"asset_tag\": \"WB-$RUN\", \"category\": \"other\",
    \"make\": \"Generic\", \"model\": \"Mini PC\", \"weight_kg\": 1.2, \"location\": \"Brussels\"}" | jq -r .device_id)
  until_true "api \"$STAFF\" GET \"$DIAG/devices/$D4\" >/dev/null 2>&1"
  # Two loop devices over files of random data stand in for the machine's two drives.
  LOOPS=()
  for i in 1 2; do
    head -c 16M /dev/urandom >"$STICK/drive$i.img"
    LOOPS+=("$(losetup --find --show "$STICK/drive$i.img")")
  done
  uv run --frozen workbench --stick "$STICK" --diagnostics "$DIAG" --location "Brussels, bench 7" \
    run --asset-tag "WB-$RUN" --drive "${LOOPS[0]}" --drive "${LOOPS[1]}" --casing light --scratches none \
    --screen pass --keyboard pass --ports pass --memory-mb 64 --cpu-seconds 1 --no-self-test --yes \
    | grep -E '^(  (boot|cpu|memory|storage|battery|network) |  passed|  log |sent |device )'
  losetup --detach "${LOOPS[@]}"
  until_true "api \"$STAFF\" GET \"$CUSTODY/devices/$D4/certificates/erasure\" >/dev/null 2>&1"
  api "$STAFF" GET "$CUSTODY/devices/$D4/certificates/erasure" \
    | jq -c '{erasures: [.erasures[] | {drive_serial, method, tool, log_sha256: .workbench.log_sha256}]}'
  rm -rf "$STICK"
else
  echo "skipped: the workbench erases real block devices; loop devices need root and losetup"
fi
