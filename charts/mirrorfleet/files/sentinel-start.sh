#!/bin/sh
# Starts the Sentinel beside one bundled Redis pod (templates/redis.yaml): it monitors the
# master another Sentinel names, else the first pod, and announces this pod's host name.
# Its configuration is written to an emptyDir, which Sentinel rewrites as it learns.
set -eu
domain="$HEADLESS.$NAMESPACE.svc.$CLUSTER_DOMAIN"
me="$(hostname).$domain"
master="$(timeout 5 redis-cli -h "$SENTINEL_SERVICE" -p 26379 --raw \
  sentinel get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | head -n 1 || true)"
[ -n "$master" ] || master="$STATEFULSET-0.$domain"
conf=/sentinel/sentinel.conf
cat > "$conf" <<CONF
port 26379
dir /sentinel
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $me
sentinel monitor $MASTER_NAME $master 6379 $QUORUM
sentinel down-after-milliseconds $MASTER_NAME $DOWN_AFTER_MS
sentinel failover-timeout $MASTER_NAME $FAILOVER_TIMEOUT_MS
sentinel parallel-syncs $MASTER_NAME 1
CONF
if [ -n "${REDIS_PASSWORD:-}" ]; then
  echo "sentinel auth-pass $MASTER_NAME $REDIS_PASSWORD" >> "$conf"
fi
exec redis-sentinel "$conf"
