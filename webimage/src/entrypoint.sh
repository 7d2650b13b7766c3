#!/bin/sh
# The lab's web server (made by pibake-webimage): a page naming the node it
# runs on, served by busybox httpd. The container's hostname is the node's: the
# lab's stack sets `hostname: "{{.Node.Hostname}}"`. LISTEN ([address:]port,
# 80 when unset) lets the image's own test serve on a free loopback port.
set -eu
node=$(busybox hostname)
busybox mkdir -p /www
busybox printf '<!DOCTYPE html>\n<html><head><title>%s</title></head>\n<body><h1>%s</h1>\n<p>Served by %s of the pibake lab (busybox httpd).</p></body></html>\n' \
  "$node" "$node" "$node" > /www/index.html
# This script is the container's PID 1, and the kernel gives PID 1 only the
# signals it handles: httpd exec'd in its place ignored the SIGTERM of
# `docker stop` and of a shutting-down board (which then waited 90 s for it
# before SIGKILL). So httpd runs as a child, and TERM or INT stops it.
busybox httpd -f -p "${LISTEN:-80}" -h /www &
httpd=$!
trap 'busybox kill -TERM "$httpd" 2>/dev/null || true; wait "$httpd" || true; exit 0' TERM INT
wait "$httpd"
