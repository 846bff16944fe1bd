#!/bin/bash
# deploy/healthcheck.sh: the images' HEALTHCHECK, without curl or wget in the image: GET
# http://127.0.0.1:$SEGQ_HTTP_PORT<path> (default /healthz) through bash's /dev/tcp; prints the
# status line and exits 0 on 200, 1 otherwise (refused, 503, no answer within 4 s).
# The worker must listen on 127.0.0.1 too (SEGQ_HTTP_HOST=0.0.0.0, as the images set it).
set -u
path=${1:-/healthz}
port=${SEGQ_HTTP_PORT:-9100}
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&3
IFS= read -r -t 4 status <&3 || { echo "no answer from 127.0.0.1:$port$path"; exit 1; }
status=${status%$'\r'}
echo "$status"
case $status in
  "HTTP/1."[01]" 200"*) exit 0 ;;
esac
exit 1
