"""The psycopg 3 leg of the client matrix (run by tests/tests/clients/psycopg.rs).

Arguments are key=value pairs. Prints one JSON object on its last stdout line; every
assertion lives in the Rust test. An unexpected exception exits non-zero with a traceback.
"""

import hashlib
import json
import sys
import threading
import time

try:
    import psycopg
except ImportError as e:  # the Rust test turns this into an install hint
    print(f"psycopg is not importable by {sys.executable}: {e}", file=sys.stderr)
    sys.exit(3)


# The statement the cancel step runs, and how a second session sees it running.
SLEEP = "select pg_sleep(30)"
RUNNING = (
    "select count(*) from pg_stat_activity "
    "where usename = current_user and state = 'active' and query = %s"
)


def wait_until_running(connect) -> None:
    """Polls through a second session until this user's SLEEP runs (at most 10 s)."""
    with connect() as watcher:
        deadline = time.monotonic() + 10
        while watcher.execute(RUNNING, (SLEEP,)).fetchone()[0] == 0:
            if time.monotonic() > deadline:
                raise TimeoutError("the query to cancel never started")
            time.sleep(0.02)


def main() -> None:
    a = dict(arg.split("=", 1) for arg in sys.argv[1:])

    def connect():
        return psycopg.connect(
            host=a["host"],
            hostaddr=a["hostaddr"],
            port=a["port"],
            dbname=a["dbname"],
            user=a["user"],
            sslmode="verify-full",
            sslrootcert=a["sslrootcert"],
            sslcert=a["sslcert"],
            sslkey=a["sslkey"],
            application_name=a["application_name"],
            connect_timeout=10,
            autocommit=True,
        )

    conn = connect()
    out = {
        "client": "psycopg",
        "version": f"{psycopg.__version__} ({psycopg.pq.__impl__}), "
        f"libpq {psycopg.pq.version()}",
    }
    with conn:
        out["current_user"] = conn.execute("select current_user").fetchone()[0]

        # psycopg 3 binds parameters server-side: Parse/Bind/Execute.
        total, echo = conn.execute(
            "select %s::int + %s::int, %s::text", (40, 2, "x&user=y")
        ).fetchone()
        out["sum"], out["echo"] = total, echo

        sha, rows, size = hashlib.sha256(), 0, 0
        with conn.cursor() as cur:
            cur.execute(a["big_sql"])
            for (value,) in cur:
                data = value.encode()
                sha.update(data)
                rows += 1
                size += len(data)
        out["big"] = {"rows": rows, "bytes": size, "sha256": sha.hexdigest()}

        conn.execute("create temp table matrix_tx (v int)")
        with conn.transaction(force_rollback=True):
            conn.execute("insert into matrix_tx values (1)")
        out["rolled_back_count"] = conn.execute(
            "select count(*) from matrix_tx"
        ).fetchone()[0]

        try:
            conn.execute("select 1/0")
            out["error_sqlstate"] = None
        except psycopg.Error as e:
            out["error_sqlstate"] = e.sqlstate
        out["after_error"] = conn.execute("select 1").fetchone()[0]

        # conn.cancel() sends a CancelRequest on a new connection (libpq PQcancel), once
        # the query runs.
        def cancel() -> None:
            wait_until_running(connect)
            conn.cancel()

        canceller = threading.Thread(target=cancel)
        started = time.monotonic()
        canceller.start()
        try:
            conn.execute(SLEEP)
            state = None
        except psycopg.Error as e:
            state = e.sqlstate
        canceller.join()
        out["cancel"] = {
            "sqlstate": state,
            "elapsed_ms": int((time.monotonic() - started) * 1000),
        }

        out["settings"] = {
            name: conn.execute("select current_setting(%s)", (name,)).fetchone()[0]
            for name in (
                "application_name",
                "DateStyle",
                "TimeZone",
                "client_encoding",
                "extra_float_digits",
            )
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
