#!/bin/sh
# The certificates of a fleet's etcd with client authentication, made with openssl:
#
#   etcd-tls.sh DIR SAN [SAN ...]
#
# DIR gets ca.pem (every etcd member's --trusted-ca-file, every certkeeper's cluster.ca_file),
# for each SAN argument (one per etcd member, such as IP:10.0.0.11,DNS:etcd1.example.net)
# etcd-N.pem and etcd-N.key (that member's --cert-file and --key-file), and client.pem and
# client.key (cluster.cert_file and cluster.key_file of each certkeeper member). Keys are 0600.
# ca.key stays in DIR: move it off the hosts once every certificate is made.
set -eu
if [ $# -lt 2 ]; then
  echo "usage: $0 DIR SAN [SAN ...]   (SAN such as IP:10.0.0.11,DNS:etcd1.example.net)" >&2
  exit 2
fi
dir=$1
shift
if [ -e "$dir/ca.key" ] || [ -e "$dir/ca.pem" ]; then
  echo "$0: $dir holds a CA already; nothing was changed (a new CA needs every certificate made again)" >&2
  exit 1
fi
mkdir -p "$dir"
umask 077
days=825
ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"

# The CA.
openssl req -x509 $ec -keyout "$dir/ca.key" -out "$dir/ca.pem" -days "$days" \
  -subj "/CN=certkeeper fleet etcd CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"

# sign NAME SUBJECT EXTENSIONS: NAME.key and NAME.pem, signed by the CA.
sign() {
  openssl req $ec -keyout "$dir/$1.key" -out "$dir/$1.csr" -subj "$2"
  printf '%s\n' "$3" > "$dir/$1.ext"
  openssl x509 -req -in "$dir/$1.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days "$days" -extfile "$dir/$1.ext" -out "$dir/$1.pem"
  rm -f "$dir/$1.csr" "$dir/$1.ext"
}

n=0
for san in "$@"; do
  n=$((n + 1))
  # An etcd member serves clients and its peers, and is a client of its peers.
  sign "etcd-$n" "/CN=etcd-$n" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=$san"
done
# The certkeeper members' client certificate.
sign client "/CN=certkeeper" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
rm -f "$dir/ca.srl"
chmod 644 "$dir"/*.pem
echo "made in $dir: ca.pem, etcd-1..etcd-$n (.pem, .key), client.pem, client.key"
