"""The psqlODBC leg of the client matrix (run by tests/tests/clients/odbc.rs), via pyodbc.

Arguments are key=value pairs. Prints one JSON object on its last stdout line; every
assertion lives in the Rust test. An unexpected exception exits non-zero with a traceback.
"""

import hashlib
import json
import sys
import threading
import time

try:
    import pyodbc
except ImportError as e:  # the Rust test turns this into an install hint
    print(f"pyodbc is not importable by {sys.executable}: {e}", file=sys.stderr)
    sys.exit(3)


def sqlstate(e: pyodbc.Error) -> str:
    return e.args[0] if e.args else ""


def scalar(conn, sql, *params):
    cur = conn.cursor()
    cur.execute(sql, *params)
    row = cur.fetchone()
    cur.close()
    return row[0]


# The statement the cancel step runs, and how a second session sees it running.
SLEEP = "select pg_sleep(30)"
RUNNING = (
    "select count(*) from pg_stat_activity "
    "where usename = current_user and state = 'active' and query = ?"
)


def wait_until_running(conn_str: str) -> None:
    """Polls through a second session until this user's SLEEP runs (at most 10 s)."""
    watcher = pyodbc.connect(conn_str, autocommit=True, timeout=10)
    try:
        deadline = time.monotonic() + 10
        while scalar(watcher, RUNNING, SLEEP) == 0:
            if time.monotonic() > deadline:
                raise TimeoutError("the query to cancel never started")
            time.sleep(0.02)
    finally:
        watcher.close()


def main() -> None:
    a = dict(arg.split("=", 1) for arg in sys.argv[1:])
    # psqlODBC has no keywords of its own for client certificates: libpq options go
    # through `pqopt`. UseServerSidePrepare=1 sends parameters with Parse/Bind/Execute.
    conn_str = (
        f"Driver={{{a['driver']}}};Server={a['host']};Port={a['port']};"
        f"Database={a['dbname']};Uid={a['user']};SSLmode=verify-full;"
        f"UseServerSidePrepare=1;CommLog=0;Debug=0;"
        f"pqopt={{hostaddr={a['hostaddr']} sslrootcert={a['sslrootcert']} "
        f"sslcert={a['sslcert']} sslkey={a['sslkey']} "
        f"application_name={a['application_name']}}}"
    )
    conn = pyodbc.connect(conn_str, autocommit=True, timeout=10)
    out = {
        "client": "psqlODBC",
        "version": f"{conn.getinfo(pyodbc.SQL_DRIVER_NAME)} "
        f"{conn.getinfo(pyodbc.SQL_DRIVER_VER)}, pyodbc {pyodbc.version}",
    }
    out["current_user"] = scalar(conn, "select current_user")

    cur = conn.cursor()
    cur.execute("select ?::int + ?::int, ?::text", 40, 2, "x&user=y")
    out["sum"], out["echo"] = cur.fetchone()
    cur.close()

    sha, rows, size = hashlib.sha256(), 0, 0
    cur = conn.cursor()
    cur.execute(a["big_sql"])
    while True:
        batch = cur.fetchmany(10000)
        if not batch:
            break
        for (value,) in batch:
            data = value.encode()
            sha.update(data)
            rows += 1
            size += len(data)
    cur.close()
    out["big"] = {"rows": rows, "bytes": size, "sha256": sha.hexdigest()}

    conn.execute("create temp table matrix_tx (v int)")
    conn.autocommit = False
    conn.execute("insert into matrix_tx values (1)")
    conn.rollback()
    conn.autocommit = True
    out["rolled_back_count"] = scalar(conn, "select count(*) from matrix_tx")

    try:
        scalar(conn, "select 1/0")
        out["error_sqlstate"] = None
    except pyodbc.Error as e:
        out["error_sqlstate"] = sqlstate(e)
    out["after_error"] = scalar(conn, "select 1")

    # SQLCancel from another thread once the query runs: psqlODBC sends a CancelRequest
    # (libpq PQcancel).
    cur = conn.cursor()

    def cancel() -> None:
        wait_until_running(conn_str)
        cur.cancel()

    canceller = threading.Thread(target=cancel)
    started = time.monotonic()
    canceller.start()
    try:
        cur.execute(SLEEP)
        state = None
    except pyodbc.Error as e:
        state = sqlstate(e)
    canceller.join()
    out["cancel"] = {
        "sqlstate": state,
        "elapsed_ms": int((time.monotonic() - started) * 1000),
    }
    cur.close()

    out["settings"] = {
        name: scalar(conn, "select current_setting(?)", name)
        for name in (
            "application_name",
            "DateStyle",
            "TimeZone",
            "client_encoding",
            "extra_float_digits",
        )
    }
    conn.close()

    # The same login through a DSN from odbc.ini (what BI tools usually configure).
    if "dsn" in a:
        dsn_conn = pyodbc.connect(f"DSN={a['dsn']}", autocommit=True, timeout=10)
        out["dsn_current_user"] = scalar(dsn_conn, "select current_user")
        dsn_conn.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
