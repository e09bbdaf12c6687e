#!/usr/bin/env bash
# Writes a small seed corpus for each fuzz target into fuzz/corpus/TARGET (not committed):
# real DCV lines, API envelopes, a certificate chain made by openssl, configuration and state.
set -euo pipefail
cd "$(dirname "$0")"
c=corpus
mkdir -p "$c"/{dcv_line,api_answer,x509,config,state}

i=0
while IFS= read -r line; do
  i=$((i + 1)); printf '%s' "$line" > "$c/dcv_line/seed-$i"
done <<'LINES'
example.com.		300	IN	TXT	"201704071405295z34is5g0jjairsdu0v5opdw8512td8kixzvtaacu4ebrkry5q"
_dnsauth.www.example.com. 300 IN TXT "k=v+/base64=="
www.example.com 300 TXT abc
www.example.com. IN 300 TXT "abc"
_0f1e2d.www.example.com. 3600 IN CNAME dcv.example-ca.com.
$INCLUDE /etc/shadow www.example.com.
www.example.com. 300 IN TXT ( "abc" ) ; comment
LINES

# Two bytes of status (HTTP status - 100), then 'N' or 'R' and two bytes of Retry-After.
ok='{"stid":"x","status":{"code":"S400104","text":"ok","type":"SUCCESS"},"data":[{"id":4297939738,"name":"www.example.com","serialNumber":"750C","expire":"2019-09-26T12:00:00.000+0200","payable":"2020-09-26T12:00:00.000+0200","certificationAuthority":[{"caType":"ICA1","caCertificate":"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"}]}]}'
prep='{"status":{"code":"S400101","text":"ok","type":"SUCCESS"},"data":[{"name":"www.example.com","authentication":[{"name":"www.example.com","method":"DNS","dns":"www.example.com. 300 IN TXT \"abc\""}]}]}'
job='{"status":{"code":"S0","text":"ok","type":"SUCCESS"},"data":[{"job":{"id":7,"status":"SUCCESS","created":"2018-12-12T11:05:25.000+0100","events":[{"ctid":"ck-1"}]},"object":{"type":"Certificate","value":"www.example.com","data":{"id":5}}}]}'
poll='{"status":{"code":"S0","text":"ok","type":"NOTIFY"},"data":[{"id":9,"ctid":"ck-1","job":{"id":7},"object":{"data":{"id":5}},"messages":[{"messageCode":"EF1","text":"x"}]}]}'
err='{"status":{"code":"E400101","text":"invalid","type":"ERROR"},"messages":[{"code":"EF1","text":"csr is required"}]}'
printf '\x00\x64N%s' "$ok" > "$c/api_answer/certificate"
printf '\x00\x64N%s' "$prep" > "$c/api_answer/prepare"
printf '\x00\x64N%s' "$job" > "$c/api_answer/job"
printf '\x00\x64N%s' "$poll" > "$c/api_answer/poll"
printf '\x01\x2cN%s' "$err" > "$c/api_answer/refused"
printf '\x01\x49R\x00\x05' > "$c/api_answer/rate-limited"
printf '\x01\x90N<html>bad gateway</html>' > "$c/api_answer/garbled"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=Root -days 30 \
  -keyout "$tmp/root.key" -out "$tmp/root.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=Intermediate \
  -keyout "$tmp/int.key" -out "$tmp/int.csr" 2>/dev/null
printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=keyCertSign\n' > "$tmp/int.ext"
openssl x509 -req -in "$tmp/int.csr" -CA "$tmp/root.pem" -CAkey "$tmp/root.key" -days 30 \
  -extfile "$tmp/int.ext" -out "$tmp/int.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=www.example.com \
  -keyout "$tmp/leaf.key" -out "$tmp/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:www.example.com,DNS:example.com\n' > "$tmp/leaf.ext"
openssl x509 -req -in "$tmp/leaf.csr" -CA "$tmp/int.pem" -CAkey "$tmp/int.key" -days 30 \
  -extfile "$tmp/leaf.ext" -out "$tmp/leaf.pem" 2>/dev/null
cat "$tmp/leaf.pem" "$tmp/int.pem" "$tmp/root.pem" > "$c/x509/bundle"
cat "$tmp/leaf.pem" "$tmp/root.pem" > "$c/x509/no-intermediate"
openssl x509 -in "$tmp/leaf.pem" -outform DER -out "$c/x509/leaf.der"

grep -v '^password_file' ../examples/certkeeper.toml > "$c/config/example"
cat > "$c/config/small" <<'TOML'
[api]
url = "http://127.0.0.1:8080/v1"
user = "user"
context = 4
password_file = "pw"
timeout = "30s"
[store]
state_dir = "state"
live_dir = "live"
[daemon]
retry_backoff = ["1m", "10m"]
jitter = "5%"
[[certificate]]
name = "www.example.com"
admin_contact = { fname = "A", lname = "B", email = "a@example.com", phone = "+1" }
technical_contact = 100
renew_before = "30d"
TOML

cat > "$c/state/journal" <<'JSON'
{"version":1,"name":"www.example.com","certificate_id":5,"term_end":1700000000,"serial":"750C",
 "generation":2,"deployed":true,"failures":0,
 "paid":[{"kind":"create","ctid":"ck-1","sent_at":1690000000,"term":0,"status":"accepted","job_id":7}],
 "order":{"id":"o-1","kind":"reissue","step":"dns_published","started_at":1690000000,
  "records":[{"name":"www.example.com.","kind":"TXT","value":"abc","ttl":300,
   "zone_line":"www.example.com. 300 IN TXT \"abc\""}],"chain":[]}}
JSON
printf '{"version":1,"name":"www.example.com"}' > "$c/state/fresh"
echo "seeds written to fuzz/$c"
