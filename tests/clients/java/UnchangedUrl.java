// A BI tool's JDBC connection, unchanged: the URL names the Redshift cluster endpoint, and
// name resolution (here the JVM's `jdk.net.hosts.file`) points it at the proxy
// (tests/tests/e2e/sni_routing.rs compiles and runs it).
//
// Usage: java UnchangedUrl <jdbc url> <sslrootcert> <sslcert> <sslkey (PKCS#8 DER)>
// Prints `current_user` on success; on an SQLException prints `SQLSTATE <code>: <message>`
// to stdout and exits 2. Anything else exits non-zero with its stack trace.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.Properties;

public final class UnchangedUrl {
    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.setProperty("user", "iam");
        p.setProperty("sslmode", "verify-full");
        p.setProperty("sslrootcert", args[1]);
        p.setProperty("sslcert", args[2]);
        p.setProperty("sslkey", args[3]);
        p.setProperty("connectTimeout", "10");
        try (Connection c = DriverManager.getConnection(args[0], p);
             ResultSet rs = c.createStatement().executeQuery("select current_user")) {
            rs.next();
            System.out.println(rs.getString(1));
        } catch (SQLException e) {
            System.out.println("SQLSTATE " + e.getSQLState() + ": " + e.getMessage());
            System.exit(2);
        }
    }
}
