#!/bin/sh
# Starts one bundled Redis pod's `redis-server` (the chart's templates/redis.yaml). With
# Sentinel, the master is the one a Sentinel names (after a failover, a restarted old
# master comes back as a replica); when no Sentinel answers, the first pod is.
set -eu
domain="$HEADLESS.$NAMESPACE.svc.$CLUSTER_DOMAIN"
me="$(hostname).$domain"
set -- --port 6379 --dir /data --appendonly yes --protected-mode no
if [ -n "${MAXMEMORY:-}" ]; then
  set -- "$@" --maxmemory "$MAXMEMORY"
fi
if [ -n "${REDIS_PASSWORD:-}" ]; then
  set -- "$@" --requirepass "$REDIS_PASSWORD" --masterauth "$REDIS_PASSWORD"
fi
if [ -n "${SENTINEL_SERVICE:-}" ]; then
  master="$(timeout 5 redis-cli -h "$SENTINEL_SERVICE" -p 26379 --raw \
    sentinel get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | head -n 1 || true)"
  [ -n "$master" ] || master="$STATEFULSET-0.$domain"
  echo "master: $master (this pod: $me)"
  set -- "$@" --replica-announce-ip "$me"
  if [ "$master" != "$me" ]; then
    set -- "$@" --replicaof "$master" 6379
  fi
fi
exec redis-server "$@"
