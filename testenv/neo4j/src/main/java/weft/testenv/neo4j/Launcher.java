package weft.testenv.neo4j;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.Objects;
import java.util.UUID;

import org.neo4j.configuration.connectors.ConnectorPortRegister;
import org.neo4j.configuration.connectors.ConnectorType;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.kernel.internal.GraphDatabaseAPI;

/**
 * Launcher runs a Neo4j Community DBMS with only its Bolt connector, on
 * loopback, with authentication on, until it is told to stop.
 *
 * <p>Arguments: {@code HOME PORT}. HOME is the DBMS home (created if
 * missing; a second start on the same HOME reopens its databases); PORT is
 * the Bolt port, 0 for a free one. The password of user neo4j is read from
 * the environment variable WEFT_NEO4J_PASSWORD (never an argument, so it is
 * not in the process list) and set at every start, so no default password
 * is ever accepted. More lines for neo4j.conf may come in WEFT_NEO4J_CONF,
 * one per line, written after weft's own.
 *
 * <p>Once Bolt accepts logins it prints one line on stdout,
 * {@code weft-neo4j ready bolt://127.0.0.1:PORT}, which the Go helper
 * (package testenv/neo4j) waits for. It shuts the DBMS down cleanly on
 * SIGTERM or when its stdin reaches end of file: the helper holds the
 * other end, so the JVM does not outlive a test binary that died.
 */
public final class Launcher {
    private Launcher() {}

    public static void main(String[] args) {
        try {
            run(args);
        } catch (Throwable e) {
            // Neo4j's threads would keep the JVM alive: exit, which runs
            // the shutdown hook if the DBMS had started.
            e.printStackTrace();
            System.exit(1);
        }
    }

    private static void run(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: Launcher HOME PORT (password in WEFT_NEO4J_PASSWORD)");
            System.exit(2);
        }
        Path home = Path.of(args[0]).toAbsolutePath();
        int port = Integer.parseInt(args[1]);
        String password = System.getenv("WEFT_NEO4J_PASSWORD");
        if (password == null || password.length() < 8) {
            System.err.println("WEFT_NEO4J_PASSWORD: not set or shorter than 8 characters");
            System.exit(2);
        }

        Files.createDirectories(home);
        Path conf = home.resolve("neo4j.conf");
        Files.writeString(conf, String.join("\n",
                "# written by weft's testenv/neo4j launcher at every start",
                "server.bolt.enabled=true",
                "server.bolt.listen_address=127.0.0.1:" + port,
                "server.bolt.advertised_address=127.0.0.1:" + port,
                "server.bolt.tls_level=DISABLED",
                "server.http.enabled=false",
                "server.https.enabled=false",
                "dbms.security.auth_enabled=true",
                "dbms.usage_report.enabled=false",
                // Small: several test packages may each run one on a 2-core machine.
                "server.memory.pagecache.size=64m",
                "db.tx_log.rotation.retention_policy=2 files",
                Objects.requireNonNullElse(System.getenv("WEFT_NEO4J_CONF"), ""),
                "") );

        DatabaseManagementService dbms = new DatabaseManagementServiceBuilder(home)
                .loadPropertiesFromFile(conf)
                .build();
        Thread stop = new Thread(dbms::shutdown, "weft-neo4j-shutdown");
        Runtime.getRuntime().addShutdownHook(stop);

        // The initial user is neo4j with password neo4j, to be changed at
        // first login; set ours before telling anyone where Bolt is. Neo4j
        // refuses to set the password a user already has (a restart on the
        // same home), so go through a throwaway one.
        String alter = "ALTER USER neo4j SET PASSWORD $password CHANGE NOT REQUIRED";
        var system = dbms.database("system");
        system.executeTransactionally(alter, Map.of("password", UUID.randomUUID().toString()));
        system.executeTransactionally(alter, Map.of("password", password));

        GraphDatabaseAPI db = (GraphDatabaseAPI) dbms.database("neo4j");
        var bolt = db.getDependencyResolver().resolveDependency(ConnectorPortRegister.class)
                .getLocalAddress(ConnectorType.BOLT);
        System.out.println("weft-neo4j ready bolt://" + bolt.getHost() + ":" + bolt.getPort());
        System.out.flush();

        // Block until the parent closes our stdin (or dies), then exit,
        // which runs the shutdown hook.
        InputStream in = System.in;
        byte[] buf = new byte[256];
        try {
            while (in.read(buf) >= 0) {
                // discard
            }
        } catch (IOException e) {
            // a broken stdin means the parent is gone: stop as well
        }
        System.exit(0);
    }
}
