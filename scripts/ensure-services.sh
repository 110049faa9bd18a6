#!/usr/bin/env bash
# Starts the local services the tests use when they are not running:
# PostgreSQL (storage tests) and RabbitMQ (Nova's versioned notifications).
set -uo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 60); do port_open "$port" && return 0; sleep 0.5; done
  echo "warning: $name did not come up on 127.0.0.1:$port; tests that need it will be skipped" >&2
  return 0
}

if ! port_open 5432; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    wait_port 5432 PostgreSQL
  else
    echo "warning: PostgreSQL is not installed; PostgreSQL tests will be skipped" >&2
  fi
fi

if ! port_open 5672; then
  if command -v rabbitmq-server >/dev/null; then
    echo "starting RabbitMQ"
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 ERL_EPMD_ADDRESS=127.0.0.1 rabbitmq-server -detached || true
    wait_port 5672 RabbitMQ
  else
    echo "warning: RabbitMQ is not installed; notification tests will be skipped" >&2
  fi
fi
exit 0
