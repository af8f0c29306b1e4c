// The pgjdbc leg of the client matrix (tests/tests/clients/pgjdbc.rs compiles and runs it).
//
// One JVM run covers every step, because starting a JVM is the slowest part of the test.
// Arguments are key=value pairs; the program prints one JSON object on its last stdout line
// and leaves every assertion to the Rust test. Any unexpected exception exits non-zero with
// its stack trace on stderr.

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Properties;

public final class ClientMatrix {
    /** The statement the cancel step runs. */
    private static final String SLEEP = "select pg_sleep(30)";

    /** Polls through a second session until this user runs `query` (at most 10 s). */
    private static void waitUntilRunning(String url, Properties p, String query) throws Exception {
        String running = "select count(*) from pg_stat_activity "
            + "where usename = current_user and state = 'active' and query = ?";
        try (Connection watcher = DriverManager.getConnection(url, p);
             PreparedStatement ps = watcher.prepareStatement(running)) {
            ps.setString(1, query);
            long deadline = System.nanoTime() + 10_000_000_000L;
            while (true) {
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    if (rs.getLong(1) > 0) {
                        return;
                    }
                }
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException("the query to cancel never started");
                }
                Thread.sleep(20);
            }
        }
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> a = new HashMap<>();
        for (String arg : args) {
            int eq = arg.indexOf('=');
            a.put(arg.substring(0, eq), arg.substring(eq + 1));
        }

        // The URL carries no secrets and no credentials: the client certificate is the login.
        String url = "jdbc:postgresql://" + a.get("host") + ":" + a.get("port") + "/" + a.get("dbname");
        Properties p = new Properties();
        p.setProperty("user", a.get("user"));
        p.setProperty("sslmode", "verify-full");
        p.setProperty("sslrootcert", a.get("sslrootcert"));
        p.setProperty("sslcert", a.get("sslcert"));
        p.setProperty("sslkey", a.get("sslkey")); // PKCS#8 DER, unencrypted
        p.setProperty("ApplicationName", a.get("application_name"));
        // Redshift reports server_version 8.0.2; pgjdbc sends application_name (at startup,
        // or later with SET) only to servers it knows to be 9.0 or newer, so against
        // Redshift it needs to be told to assume that.
        p.setProperty("assumeMinServerVersion", "9.0");
        p.setProperty("connectTimeout", "10");

        Map<String, Object> out = new LinkedHashMap<>();
        try (Connection c = DriverManager.getConnection(url, p)) {
            out.put("client", "pgjdbc");
            out.put("version", c.getMetaData().getDriverVersion() + " on Java " + System.getProperty("java.version"));

            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("select current_user")) {
                rs.next();
                out.put("current_user", rs.getString(1));
            }

            try (PreparedStatement ps = c.prepareStatement("select ?::int + ?::int, ?::text")) {
                ps.setInt(1, 40);
                ps.setInt(2, 2);
                ps.setString(3, "x&user=y");
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    out.put("sum", rs.getInt(1));
                    out.put("echo", rs.getString(2));
                }
            }

            MessageDigest sha = MessageDigest.getInstance("SHA-256");
            long rows = 0;
            long bytes = 0;
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(a.get("big_sql"))) {
                while (rs.next()) {
                    byte[] v = rs.getString(1).getBytes(StandardCharsets.UTF_8);
                    sha.update(v);
                    rows++;
                    bytes += v.length;
                }
            }
            Map<String, Object> big = new LinkedHashMap<>();
            big.put("rows", rows);
            big.put("bytes", bytes);
            big.put("sha256", hex(sha.digest()));
            out.put("big", big);

            try (Statement s = c.createStatement()) {
                s.execute("create temp table matrix_tx (v int)");
                c.setAutoCommit(false);
                s.executeUpdate("insert into matrix_tx values (1)");
                c.rollback();
                c.setAutoCommit(true);
                try (ResultSet rs = s.executeQuery("select count(*) from matrix_tx")) {
                    rs.next();
                    out.put("rolled_back_count", rs.getLong(1));
                }
            }

            try (Statement s = c.createStatement()) {
                s.executeQuery("select 1/0");
                out.put("error_sqlstate", null);
            } catch (SQLException e) {
                out.put("error_sqlstate", e.getSQLState());
            }
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("select 1")) {
                rs.next();
                out.put("after_error", rs.getLong(1));
            }

            // Statement.cancel() sends a CancelRequest on a new connection, once a second
            // session sees the query run.
            try (Statement s = c.createStatement()) {
                Thread canceller = new Thread(() -> {
                    try {
                        waitUntilRunning(url, p, SLEEP);
                        s.cancel();
                    } catch (Exception e) {
                        e.printStackTrace();
                    }
                });
                long started = System.nanoTime();
                canceller.start();
                Map<String, Object> cancel = new LinkedHashMap<>();
                try {
                    s.execute(SLEEP);
                    cancel.put("sqlstate", null);
                } catch (SQLException e) {
                    cancel.put("sqlstate", e.getSQLState());
                }
                cancel.put("elapsed_ms", (System.nanoTime() - started) / 1_000_000);
                canceller.join();
                out.put("cancel", cancel);
            }

            out.put("settings", settings(c));
        }
        System.out.println(json(out));
    }

    // The session settings the driver's startup parameters set, as the server sees them.
    private static Map<String, Object> settings(Connection c) throws SQLException {
        Map<String, Object> m = new LinkedHashMap<>();
        String[] names = {"application_name", "DateStyle", "TimeZone", "client_encoding", "extra_float_digits"};
        try (Statement s = c.createStatement()) {
            for (String n : names) {
                try (ResultSet rs = s.executeQuery("select current_setting('" + n + "')")) {
                    rs.next();
                    m.put(n, rs.getString(1));
                }
            }
        }
        return m;
    }

    private static String hex(byte[] b) {
        StringBuilder sb = new StringBuilder();
        for (byte x : b) {
            sb.append(String.format("%02x", x));
        }
        return sb.toString();
    }

    private static String json(Object v) {
        if (v == null) {
            return "null";
        }
        if (v instanceof Number) {
            return v.toString();
        }
        if (v instanceof Map) {
            StringBuilder sb = new StringBuilder("{");
            for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
                if (sb.length() > 1) {
                    sb.append(',');
                }
                sb.append(json(e.getKey().toString())).append(':').append(json(e.getValue()));
            }
            return sb.append('}').toString();
        }
        StringBuilder sb = new StringBuilder("\"");
        for (char ch : v.toString().toCharArray()) {
            if (ch == '"' || ch == '\\') {
                sb.append('\\').append(ch);
            } else if (ch < 0x20) {
                sb.append(String.format("\\u%04x", (int) ch));
            } else {
                sb.append(ch);
            }
        }
        return sb.append('"').toString();
    }
}
