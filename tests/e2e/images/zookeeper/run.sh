#!/bin/sh
# Writes zoo.cfg from cp-zookeeper's variables and runs ZooKeeper in the foreground.
set -eu
if [ -z "${ZOOKEEPER_CLIENT_PORT:-}" ]; then echo "ZOOKEEPER_CLIENT_PORT is required." >&2; exit 1; fi
mkdir -p /var/lib/zookeeper/data /var/lib/zookeeper/log /etc/zookeeper-run
cat >/etc/zookeeper-run/zoo.cfg <<CFG
dataDir=/var/lib/zookeeper/data
dataLogDir=/var/lib/zookeeper/log
clientPort=${ZOOKEEPER_CLIENT_PORT}
tickTime=${ZOOKEEPER_TICK_TIME:-2000}
autopurge.snapRetainCount=${ZOOKEEPER_AUTOPURGE_SNAP_RETAIN_COUNT:-3}
autopurge.purgeInterval=${ZOOKEEPER_AUTOPURGE_PURGE_INTERVAL:-0}
admin.enableServer=false
4lw.commands.whitelist=srvr,ruok
CFG
# Debian's own classpath (/etc/zookeeper/conf/environment), logging to the console.
exec java -Xmx128m -Dzookeeper.root.logger=INFO,CONSOLE -Dzookeeper.log.dir=/var/lib/zookeeper/log \
    -cp "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar" \
    org.apache.zookeeper.server.quorum.QuorumPeerMain /etc/zookeeper-run/zoo.cfg
