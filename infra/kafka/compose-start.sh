#!/bin/bash
# docker-compose.yml's Kafka: infra/kafka/server.properties (SASL/SCRAM, ACLs) with the
# container's listeners, the broker's password from the environment (env file
# .local/secrets/kafka.env), and storage formatted once with the broker's and admin's SCRAM
# credentials. Nothing here prints a password.
set -euo pipefail
: "${KAFKA_BROKER_PASSWORD:?missing: run ./dev secrets (it writes .local/secrets/kafka.env)}"
: "${KAFKA_ADMIN_PASSWORD:?missing: run ./dev secrets (it writes .local/secrets/kafka.env)}"
umask 077
mkdir -p /tmp/greenit
conf=/tmp/greenit/server.properties
data=/var/lib/kafka/data
scram=org.apache.kafka.common.security.scram.ScramLoginModule
plain=org.apache.kafka.common.security.plain.PlainLoginModule
{
  cat /greenit/server.properties
  # later keys override the template's: the container listens on all interfaces, publishes
  # 9092 to the host's loopback and serves the other containers on kafka:19092
  echo "listeners=SASL_PLAINTEXT://:9092,INTERNAL://:19092,CONTROLLER://:9093"
  echo "advertised.listeners=SASL_PLAINTEXT://127.0.0.1:9092,INTERNAL://kafka:19092"
  echo "listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,INTERNAL:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
  echo "inter.broker.listener.name=INTERNAL"
  echo "controller.quorum.bootstrap.servers=kafka:9093"
  echo "log.dirs=$data"
  echo "listener.name.controller.plain.sasl.jaas.config=$plain required username=\"broker\" password=\"$KAFKA_BROKER_PASSWORD\" user_broker=\"$KAFKA_BROKER_PASSWORD\";"
  echo "listener.name.internal.scram-sha-512.sasl.jaas.config=$scram required username=\"broker\" password=\"$KAFKA_BROKER_PASSWORD\";"
  echo "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=$scram required username=\"broker\" password=\"$KAFKA_BROKER_PASSWORD\";"
} >"$conf"
# the container's healthcheck lists topics as the admin
{
  echo "security.protocol=SASL_PLAINTEXT"
  echo "sasl.mechanism=SCRAM-SHA-512"
  echo "sasl.jaas.config=$scram required username=\"admin\" password=\"$KAFKA_ADMIN_PASSWORD\";"
} >/tmp/greenit/admin.properties
if [[ ! -f $data/meta.properties ]]; then
  /opt/kafka/bin/kafka-storage.sh format --standalone -t "$(/opt/kafka/bin/kafka-storage.sh random-uuid)" -c "$conf" \
    --add-scram "SCRAM-SHA-512=[name=broker,password=$KAFKA_BROKER_PASSWORD]" \
    --add-scram "SCRAM-SHA-512=[name=admin,password=$KAFKA_ADMIN_PASSWORD]" >/dev/null
fi
unset KAFKA_BROKER_PASSWORD KAFKA_ADMIN_PASSWORD
exec /opt/kafka/bin/kafka-server-start.sh "$conf"
