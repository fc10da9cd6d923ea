#!/usr/bin/env bash
# A throwaway OpenLDAP server for the ldap tests, without systemd and
# without touching /etc/ldap: its configuration, data, certificates, pid
# file and log all live in DIR.
#
#   scripts/slapd.sh start DIR PORT LDAPS_PORT   make DIR if needed, start slapd
#   scripts/slapd.sh stop DIR                    stop the slapd DIR's pid file names
#
# The directory (suffix dc=example,dc=com) has a root DN
# cn=admin,dc=example,dc=com with password "secret", ou=people with users
# alice, bob and carol (passwords alicepw, bobpw, carolpw, mail
# NAME@example.com) and ou=groups. DIR/ca.pem is the CA that signed the
# LDAPS certificate (for 127.0.0.1 and localhost); DIR/other_ca.pem is a CA
# that signed nothing (for the tests of a wrong CA).
#
# `start` is idempotent: if DIR's slapd answers, nothing is done and it
# prints "up". It exits non-zero, with the last lines of DIR/slapd.log, if
# slapd does not come up within 10 s.
set -euo pipefail

SUFFIX=dc=example,dc=com
ROOT_DN=cn=admin,$SUFFIX
ROOT_PW=secret

usage() { echo "usage: $0 start DIR PORT LDAPS_PORT | stop DIR" >&2; exit 2; }

answers() { # DIR PORT
  timeout 5 ldapsearch -x -H "ldap://127.0.0.1:$2" -D "$ROOT_DN" -w "$ROOT_PW" \
    -b "$SUFFIX" -s base dn >/dev/null 2>&1
}

running_pid() { # DIR: the pid of DIR's slapd, if it runs
  local pid
  pid=$(cat "$1/slapd.pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null &&
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = slapd ] && echo "$pid"
}

make_certs() { # DIR
  local d=$1
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=mongoose_native test CA" \
    -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=unrelated CA" \
    -keyout "$d/other_ca.key" -out "$d/other_ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
    >"$d/server.ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 3650 -extfile "$d/server.ext" -out "$d/server.pem" 2>/dev/null
}

make_instance() { # DIR
  local d=$1
  mkdir -p "$d/data"
  make_certs "$d"
  cat >"$d/slapd.conf" <<EOF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile $d/slapd.pid
argsfile $d/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCACertificateFile $d/ca.pem
TLSCertificateFile $d/server.pem
TLSCertificateKeyFile $d/server.key
sizelimit 500

database mdb
maxsize 104857600
suffix "$SUFFIX"
rootdn "$ROOT_DN"
rootpw $ROOT_PW
directory $d/data
index objectClass eq
index uid eq
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
EOF
  {
    printf 'dn: %s\nobjectClass: dcObject\nobjectClass: organization\no: example\ndc: example\n\n' "$SUFFIX"
    printf 'dn: ou=people,%s\nobjectClass: organizationalUnit\nou: people\n\n' "$SUFFIX"
    printf 'dn: ou=groups,%s\nobjectClass: organizationalUnit\nou: groups\n\n' "$SUFFIX"
    local n=0
    for user in alice bob carol; do
      n=$((n + 1))
      printf 'dn: uid=%s,ou=people,%s\nobjectClass: inetOrgPerson\nuid: %s\ncn: %s\nsn: %s\n' \
        "$user" "$SUFFIX" "$user" "${user^}" "User$n"
      printf 'mail: %s@example.com\nemployeeNumber: %d\nuserPassword: %spw\n\n' "$user" "$n" "$user"
    done
  } >"$d/init.ldif"
  slapadd -f "$d/slapd.conf" -l "$d/init.ldif" >"$d/slapd.log" 2>&1
}

case "${1:-}" in
  start)
    [ $# -eq 4 ] || usage
    dir=$(realpath -m "$2") port=$3 ldaps=$4
    if running_pid "$dir" >/dev/null && answers "$dir" "$port"; then echo up; exit 0; fi
    [ -f "$dir/slapd.conf" ] || make_instance "$dir"
    # -d 0 keeps it in the foreground, so setsid can detach it and its log stays ours.
    setsid /usr/sbin/slapd -f "$dir/slapd.conf" -d 0 \
      -h "ldap://127.0.0.1:$port/ ldaps://127.0.0.1:$ldaps/" </dev/null >>"$dir/slapd.log" 2>&1 &
    for _ in $(seq 50); do
      answers "$dir" "$port" && { echo started; exit 0; }
      sleep 0.2
    done
    echo "slapd did not come up on 127.0.0.1:$port; last lines of $dir/slapd.log:" >&2
    tail -n 15 "$dir/slapd.log" >&2
    exit 1
    ;;
  stop)
    [ $# -eq 2 ] || usage
    dir=$(realpath -m "$2")
    if pid=$(running_pid "$dir"); then
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$dir/slapd.pid"
    ;;
  *) usage ;;
esac
