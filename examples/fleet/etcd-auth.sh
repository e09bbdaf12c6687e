#!/bin/sh
# etcd's users for a fleet, made with etcdctl once the etcd cluster runs with TLS
# (etcd-tls.sh) and before its authentication is enabled:
#
#   ETCDCTL_ENDPOINTS=https://10.0.0.11:2379 ETCDCTL_CACERT=ca.pem \
#   ETCDCTL_CERT=client.pem ETCDCTL_KEY=client.key \
#     etcd-auth.sh ROOT_PASSWORD_FILE [CERTKEEPER_PASSWORD_FILE] [PREFIX]
#
# It makes the root user (password from ROOT_PASSWORD_FILE), and the user `certkeeper` with
# read and write under PREFIX (default /certkeeper/) only, then enables authentication. With
# CERTKEEPER_PASSWORD_FILE (the file cluster.password_file names, 0600), the user has that
# password; without, it has none and etcd takes it from the client certificate's common name
# (CN=certkeeper, as etcd-tls.sh makes it): no password, no token to renew.
# Passwords go to etcdctl on its standard input, never on its command line. It runs once, on
# an etcd without users (a second run stops at "user already exists").
set -eu
if [ $# -lt 1 ]; then
  echo "usage: $0 ROOT_PASSWORD_FILE [CERTKEEPER_PASSWORD_FILE] [PREFIX]" >&2
  exit 2
fi
root=$1
password=${2:-}
prefix=${3:-/certkeeper/}
export ETCDCTL_API=3
etcdctl user add root --interactive=false < "$root"
etcdctl role add root
etcdctl user grant-role root root
etcdctl role add certkeeper
etcdctl role grant-permission certkeeper --prefix=true readwrite "$prefix"
if [ -n "$password" ]; then
  etcdctl user add certkeeper --interactive=false < "$password"
else
  etcdctl user add certkeeper --no-password
fi
etcdctl user grant-role certkeeper certkeeper
etcdctl auth enable
