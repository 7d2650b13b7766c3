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
exec busybox httpd -f -p "${LISTEN:-80}" -h /www
