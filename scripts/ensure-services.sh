#!/usr/bin/env bash
# Brings up the local services the tests use, installing them from Debian's packages
# when they are missing: PostgreSQL on 127.0.0.1:5432 (the storage, outbox, alarm,
# incident and workflow suites run on it as well as on SQLite), Redis on :6379 and
# etcd on :2379 (the controllers' coordination backends), and RabbitMQ on :5672
# (Nova's versioned notifications). Quick when they already run.
# Exits non-zero, naming each service that could not be brought up: no test is ever
# skipped for want of one.
set -uo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
failed=()

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port PORT SECONDS: true once something listens on 127.0.0.1:PORT.
wait_port() {
  local tries=$(($2 * 4))
  for _ in $(seq 1 "$tries"); do port_open "$1" && return 0; sleep 0.25; done
  return 1
}

fail() {
  echo "error: $1" >&2
  failed+=("$2")
}

install_packages() { bash scripts/install-debian-deps.sh "$@"; }

# The tests connect as user postgres, without a password, to database "test".
postgres_lets_tests_in() {
  psql -h 127.0.0.1 -p 5432 -U postgres -d "$1" -Atqc "SELECT 1" >/dev/null 2>&1
}

ensure_postgresql() {
  if ! port_open 5432; then
    local fresh=""
    if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
      echo "PostgreSQL is not installed: installing Debian's postgresql"
      install_packages postgresql || { fail "cannot install PostgreSQL (Debian package postgresql)" PostgreSQL; return; }
      fresh=1
    fi
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n1)
    if [ -n "$fresh" ]; then
      # A cluster of its own for the tests: connections from loopback need no password.
      $SUDO sed -i '1i host all postgres 127.0.0.1/32 trust' "/etc/postgresql/$version/main/pg_hba.conf"
    fi
    echo "starting PostgreSQL $version"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    if ! wait_port 5432 30; then
      fail "PostgreSQL $version did not come up on 127.0.0.1:5432 (see /var/log/postgresql/)" PostgreSQL
      return
    fi
  fi
  command -v psql >/dev/null || return 0  # a server without its client: the port will do
  postgres_lets_tests_in test && return 0
  if postgres_lets_tests_in postgres; then
    echo "creating PostgreSQL database test"
    psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -qc "CREATE DATABASE test" >/dev/null \
      && postgres_lets_tests_in test && return 0
  fi
  fail "PostgreSQL on 127.0.0.1:5432 does not let user postgres into database test without a password" PostgreSQL
}

redis_answers() {
  (
    exec 3<>/dev/tcp/127.0.0.1/6379 || exit 1
    printf 'PING\r\n' >&3
    read -r -t 2 reply <&3 && [[ $reply == +PONG* ]]
  ) 2>/dev/null
}

ensure_redis() {
  redis_answers && return 0
  if ! port_open 6379; then
    if ! command -v redis-server >/dev/null; then
      echo "Redis is not installed: installing Debian's redis-server"
      install_packages redis-server || { fail "cannot install Redis (Debian package redis-server)" Redis; return; }
    fi
    echo "starting Redis"
    $SUDO mkdir -p /var/lib/redis /var/log/redis
    # Nothing kept on disk: the tests' data is throwaway.
    $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
      --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
    wait_port 6379 15
  fi
  for _ in $(seq 1 20); do redis_answers && return 0; sleep 0.25; done
  fail "Redis did not answer PING on 127.0.0.1:6379 (see /var/log/redis/ci.log)" Redis
}

etcd_answers() {
  (
    exec 3<>/dev/tcp/127.0.0.1/2379 || exit 1
    printf 'GET /version HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    grep -q etcdserver <&3
  ) 2>/dev/null
}

ensure_etcd() {
  etcd_answers && return 0
  if ! port_open 2379; then
    if ! command -v etcd >/dev/null; then
      echo "etcd is not installed: installing Debian's etcd-server"
      install_packages etcd-server || { fail "cannot install etcd (Debian package etcd-server)" etcd; return; }
    fi
    etcd_answers && return 0
    echo "starting etcd"
    # On loopback only, its data throwaway like the tests'.
    local data=/var/tmp/medevac-etcd
    $SUDO mkdir -p "$data"
    $SUDO sh -c "nohup etcd --data-dir '$data' --listen-client-urls http://127.0.0.1:2379 \
      --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
      >'$data.log' 2>&1 &"
    wait_port 2379 15
  fi
  for _ in $(seq 1 20); do etcd_answers && return 0; sleep 0.25; done
  fail "etcd did not answer on 127.0.0.1:2379 (see /var/tmp/medevac-etcd.log)" etcd
}

ensure_rabbitmq() {
  port_open 5672 && return 0
  if ! command -v rabbitmq-server >/dev/null; then
    echo "RabbitMQ is not installed: installing Debian's rabbitmq-server"
    install_packages rabbitmq-server || { fail "cannot install RabbitMQ (Debian package rabbitmq-server)" RabbitMQ; return; }
    port_open 5672 && return 0
  fi
  echo "starting RabbitMQ"
  $SUDO env RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 ERL_EPMD_ADDRESS=127.0.0.1 rabbitmq-server -detached || true
  wait_port 5672 60 || fail "RabbitMQ did not come up on 127.0.0.1:5672 (see /var/log/rabbitmq/)" RabbitMQ
}

ensure_postgresql
ensure_redis
ensure_etcd
ensure_rabbitmq
if [ ${#failed[@]} -gt 0 ]; then
  echo "error: the tests need ${failed[*]}, which could not be brought up" >&2
  exit 1
fi
