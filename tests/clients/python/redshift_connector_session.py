"""A session of AWS's Redshift Python driver (redshift_connector) through the proxy.

Usage: redshift_connector_session.py '<json arguments>'
  host, port, database, user, password: what the application is configured with
  dial: the address `host` resolves to (stands in for DNS naming the cluster endpoint)

The proxy's CA reaches the driver through SSL_CERT_FILE (the driver loads the default
verify paths plus its bundled Redshift CAs; sslmode=verify-full checks the host name).
Prints one JSON report on stdout.
"""

import json
import socket
import sys

import redshift_connector

args = json.loads(sys.argv[1])

# DNS: the cluster endpoint name resolves to the proxy.
_getaddrinfo = socket.getaddrinfo


def _resolve(host, *rest, **kw):
    if host == args["host"]:
        host = args["dial"]
    return _getaddrinfo(host, *rest, **kw)


socket.getaddrinfo = _resolve


def sqlstate(error):
    detail = error.args[0] if error.args else None
    if isinstance(detail, dict):
        return detail.get("C")
    return None


report = {}
try:
    conn = redshift_connector.connect(
        host=args["host"],
        port=args["port"],
        database=args["database"],
        user=args["user"],
        password=args["password"],
        ssl=True,
        sslmode="verify-full",
        timeout=30,
        application_name="redshift-connector-e2e",
    )
except Exception as e:  # the report says how the login failed
    report["login_error"] = {"type": type(e).__name__, "sqlstate": sqlstate(e), "text": str(e)}
    print(json.dumps(report))
    sys.exit(0)

report["server_protocol_version"] = conn._client_protocol_version
cur = conn.cursor()
cur.execute("select current_user, current_database()")
report["current_user"], report["database"] = cur.fetchone()
conn.rollback()

# An error, and the session goes on after rolling back.
try:
    cur.execute("select 1/0")
except redshift_connector.Error as e:
    report["error_sqlstate"] = sqlstate(e)
conn.rollback()

# A transaction that is rolled back, then one that commits.
cur.execute("create temp table rc_t (x int)")
conn.commit()
cur.execute("insert into rc_t values (1), (2)")
conn.rollback()
cur.execute("select count(*) from rc_t")
report["after_rollback"] = cur.fetchone()[0]
cur.execute("insert into rc_t values (1), (2), (3)")
conn.commit()
cur.execute("select count(*) from rc_t")
report["after_commit"] = cur.fetchone()[0]
conn.close()
print(json.dumps(report))
