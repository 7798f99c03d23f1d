package dev.estaskstore.engine;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.net.HttpURLConnection;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;

import org.codelibs.opensearch.runner.OpenSearchRunner;
import org.opensearch.http.HttpServerTransport;
import org.opensearch.node.Node;

/**
 * Starts a real OpenSearch 2.19 cluster (one node by default) inside this JVM, for the project's
 * tests, demo and benchmarks.
 *
 * <pre>
 * java -cp 'target/classes:target/dependency/*' dev.estaskstore.engine.EngineMain \
 *     [--port N] [--data DIR] [--nodes N] [--cluster-name NAME]
 *     [--parent-pid PID] [--watch-stdin] [--url-file FILE] [--nodes-file FILE]
 * </pre>
 *
 * <ul>
 *   <li>{@code --port N}: HTTP port of the first node; 0 (the default) picks a free port. The
 *       other nodes of a multi-node cluster get free ports of their own, kept across
 *       {@code stop-node}/{@code start-node}.</li>
 *   <li>{@code --data DIR}: home of the cluster (node_1/data, node_1/logs, ...); default
 *       {@code .engine/data}.</li>
 *   <li>{@code --nodes N}: N cluster-manager-eligible data nodes in this JVM (3 for failover
 *       tests). Default 1, which runs with {@code discovery.type=single-node}.</li>
 *   <li>{@code --parent-pid PID}: exit when that process is gone (checked every second).</li>
 *   <li>{@code --watch-stdin}: exit when stdin reaches EOF (start it with a pipe and keep the
 *       write end open for as long as the engine should live). Lines read from stdin are
 *       commands: {@code stop-node I} / {@code start-node I} (1-based) close or restart one node,
 *       {@code shutdown} stops everything.</li>
 *   <li>{@code --url-file FILE}: once HTTP answers, write the URL there (atomically).</li>
 *   <li>{@code --nodes-file FILE}: likewise, the URL of every node, one a line, in node order.</li>
 * </ul>
 *
 * Once the first node's HTTP port answers it prints {@code ENGINE_URL=http://127.0.0.1:PORT}
 * (and {@code ENGINE_NODE_URL_<i>=...} for every node) on stdout.
 */
public final class EngineMain {

    private static final String HOST = "127.0.0.1";

    /** The real stdout/stderr: OpenSearch's log setup redirects System.out/err into its logger. */
    private static final PrintStream OUT = System.out;
    private static final PrintStream ERR = System.err;

    private int port = 0;
    private String data = ".engine/data";
    private int nodes = 1;
    private String clusterName = "es-task-store-engine";
    private long parentPid = -1;
    private boolean watchStdin = false;
    private String urlFile = null;
    private String nodesFile = null;

    private final AtomicBoolean closing = new AtomicBoolean(false);
    private final CountDownLatch stopped = new CountDownLatch(1);
    private volatile OpenSearchRunner runner;

    public static void main(final String[] args) {
        // Must be set before any Netty class is loaded (the server's own launcher does the same).
        System.setProperty("opensearch.set.netty.runtime.available.processors", "false");
        System.setProperty("log4j2.disable.jmx", "true");
        if (System.getProperty("log4j.configurationFile") == null) {
            final URL config = EngineMain.class.getResource("/engine-log4j2.properties");
            if (config != null) {
                System.setProperty("log4j.configurationFile", config.toString());
            }
        }
        final EngineMain main = new EngineMain();
        try {
            main.parse(args);
            main.run();
        } catch (final IllegalArgumentException e) {
            ERR.println("engine: " + e.getMessage());
            System.exit(2);
        } catch (final Throwable t) {
            ERR.println("engine: failed to start: " + t);
            t.printStackTrace(ERR);
            main.shutdown("start failure");
            Runtime.getRuntime().halt(1);
        }
    }

    private void parse(final String[] args) {
        for (int i = 0; i < args.length; i++) {
            final String a = args[i];
            switch (a) {
                case "--port":
                    port = Integer.parseInt(value(args, ++i, a));
                    break;
                case "--data":
                    data = value(args, ++i, a);
                    break;
                case "--nodes":
                    nodes = Integer.parseInt(value(args, ++i, a));
                    if (nodes < 1) {
                        throw new IllegalArgumentException("--nodes must be at least 1");
                    }
                    break;
                case "--cluster-name":
                    clusterName = value(args, ++i, a);
                    break;
                case "--parent-pid":
                    parentPid = Long.parseLong(value(args, ++i, a));
                    break;
                case "--watch-stdin":
                    watchStdin = true;
                    break;
                case "--url-file":
                    urlFile = value(args, ++i, a);
                    break;
                case "--nodes-file":
                    nodesFile = value(args, ++i, a);
                    break;
                default:
                    throw new IllegalArgumentException("unknown argument: " + a);
            }
        }
    }

    private static String value(final String[] args, final int i, final String flag) {
        if (i >= args.length) {
            throw new IllegalArgumentException(flag + " needs a value");
        }
        return args[i];
    }

    private void run() throws Exception {
        // Watchdogs first: the engine must never outlive whoever started it, even mid-start.
        if (parentPid > 0) {
            startParentWatchdog(parentPid);
        }
        if (watchStdin) {
            startStdinWatcher();
        }
        Runtime.getRuntime().addShutdownHook(new Thread(() -> shutdown("shutdown hook"), "engine-shutdown"));

        final Path home = Paths.get(data).toAbsolutePath();
        Files.createDirectories(home);

        // Ports: node 1 gets --port (0 = any free port, read back after binding); with several
        // nodes every node needs a known transport port for discovery, so pick free ones now.
        final int[] transportPorts = new int[nodes];
        final int[] httpPorts = new int[nodes];
        for (int i = 0; i < nodes; i++) {
            transportPorts[i] = nodes == 1 ? 0 : freePort();
            httpPorts[i] = i == 0 && (port != 0 || nodes == 1) ? port : freePort();
        }
        final List<String> seedHosts = new ArrayList<>();
        final List<String> managers = new ArrayList<>();
        for (int i = 0; i < nodes; i++) {
            seedHosts.add(HOST + ":" + transportPorts[i]);
            managers.add(nodeName(i + 1));
        }

        final OpenSearchRunner r = new OpenSearchRunner();
        r.setMaxHttpPort(-1);
        r.onBuild((id, settings) -> {
            settings.put("node.name", nodeName(id));
            settings.put("network.host", HOST);
            settings.put("http.port", String.valueOf(httpPorts[id - 1]));
            settings.put("transport.port", String.valueOf(transportPorts[id - 1]));
            settings.put("cluster.routing.allocation.disk.threshold_enabled", "false");
            settings.put("indices.breaker.total.use_real_memory", "false");
            settings.put("action.auto_create_index", "true");
            settings.put("http.cors.enabled", "false");
            if (nodes == 1) {
                settings.put("discovery.type", "single-node");
            } else {
                settings.putList("discovery.seed_hosts", seedHosts);
                settings.putList("cluster.initial_cluster_manager_nodes", managers);
                settings.putList("node.roles", "cluster_manager", "data", "ingest");
                // Node.start() would otherwise wait up to 30 s for an elected cluster manager,
                // which needs a quorum of nodes that are started one after another here.
                settings.put("discovery.initial_state_timeout", "0s");
            }
        });
        runner = r;
        if (closing.get()) {
            return;
        }
        r.build(OpenSearchRunner.newConfigs()
                .basePath(home.toString())
                .clusterName(clusterName)
                .numOfNode(nodes)
                .disableESLogger()
                .moduleTypes(String.join(",", MODULES)));

        final String url = httpUrl(r.getNode(0));
        waitForHttp(url, 120_000);
        final StringBuilder nodeUrls = new StringBuilder();
        for (int i = 0; i < nodes; i++) {
            final String nodeUrl = httpUrl(r.getNode(i));
            waitForHttp(nodeUrl, 120_000);
            nodeUrls.append(nodeUrl).append('\n');
            OUT.println("ENGINE_NODE_URL_" + (i + 1) + "=" + nodeUrl);
        }
        if (nodesFile != null) {
            writeAtomically(nodesFile, nodeUrls.toString());
        }
        if (urlFile != null) {
            writeAtomically(urlFile, url + "\n");
        }
        OUT.println("ENGINE_URL=" + url);
        OUT.flush();

        stopped.await();
        // Non-daemon threads of a closed node must not keep the JVM alive.
        Runtime.getRuntime().halt(0);
    }

    /** The plugins the library needs, loaded from the classpath (no plugin directories). */
    private static final String[] MODULES = {
        "org.opensearch.transport.Netty4Plugin",
        "org.opensearch.painless.PainlessPlugin",
        "org.opensearch.index.reindex.ReindexPlugin",
        "org.opensearch.analysis.common.CommonAnalysisPlugin",
        "org.opensearch.index.mapper.MapperExtrasPlugin",
    };

    private static String nodeName(final int id) {
        return "engine-node-" + id;
    }

    private static String httpUrl(final Node node) {
        final HttpServerTransport http = node.injector().getInstance(HttpServerTransport.class);
        return "http://" + HOST + ":" + http.boundAddress().publishAddress().getPort();
    }

    private static void writeAtomically(final String file, final String content) throws IOException {
        final Path target = Paths.get(file).toAbsolutePath();
        final Path tmp = target.resolveSibling(target.getFileName() + ".tmp");
        Files.writeString(tmp, content, StandardCharsets.UTF_8);
        Files.move(tmp, target, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }

    private static int freePort() {
        try (ServerSocket s = new ServerSocket()) {
            s.setReuseAddress(true);
            s.bind(new InetSocketAddress(HOST, 0));
            return s.getLocalPort();
        } catch (final IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private static void waitForHttp(final String url, final long timeoutMillis) throws InterruptedException {
        final long deadline = System.currentTimeMillis() + timeoutMillis;
        while (true) {
            try {
                final HttpURLConnection c = (HttpURLConnection) new URL(url + "/").openConnection();
                c.setConnectTimeout(2000);
                c.setReadTimeout(5000);
                final int code = c.getResponseCode();
                c.disconnect();
                if (code == 200) {
                    return;
                }
            } catch (final IOException e) {
                // not up yet
            }
            if (System.currentTimeMillis() > deadline) {
                throw new IllegalStateException("HTTP did not answer at " + url);
            }
            Thread.sleep(200);
        }
    }

    private void startParentWatchdog(final long pid) {
        final Optional<ProcessHandle> parent = ProcessHandle.of(pid);
        if (parent.isEmpty() || !parent.get().isAlive()) {
            ERR.println("engine: parent process " + pid + " is not running; exiting");
            Runtime.getRuntime().halt(1);
        }
        final Thread t = new Thread(() -> {
            final ProcessHandle p = parent.get();
            while (true) {
                try {
                    Thread.sleep(1000);
                } catch (final InterruptedException e) {
                    return;
                }
                if (!p.isAlive()) {
                    ERR.println("engine: parent process " + pid + " is gone; shutting down");
                    exit(0);
                }
            }
        }, "engine-parent-watchdog");
        t.setDaemon(true);
        t.start();
    }

    private void startStdinWatcher() {
        final Thread t = new Thread(() -> {
            try (BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
                String line;
                while ((line = in.readLine()) != null) {
                    command(line.trim());
                }
            } catch (final IOException e) {
                // treat as EOF
            }
            ERR.println("engine: stdin closed; shutting down");
            exit(0);
        }, "engine-stdin-watcher");
        t.setDaemon(true);
        t.start();
    }

    private void command(final String line) {
        if (line.isEmpty()) {
            return;
        }
        final String[] parts = line.split("\\s+");
        try {
            switch (parts[0]) {
                case "shutdown":
                    exit(0);
                    break;
                case "stop-node": {
                    final int i = Integer.parseInt(parts[1]) - 1;
                    final Node node = runner.getNode(i);
                    node.close();
                    OUT.println("ENGINE_NODE_STOPPED=" + (i + 1));
                    break;
                }
                case "start-node": {
                    final int i = Integer.parseInt(parts[1]) - 1;
                    if (!runner.startNode(i)) {
                        throw new IllegalStateException("node " + (i + 1) + " did not start");
                    }
                    OUT.println("ENGINE_NODE_STARTED=" + (i + 1) + " " + httpUrl(runner.getNode(i)));
                    break;
                }
                default:
                    OUT.println("ENGINE_ERROR=unknown command: " + line);
            }
        } catch (final Exception e) {
            OUT.println("ENGINE_ERROR=" + line + ": " + e);
        }
        OUT.flush();
    }

    /** Stops the nodes and ends the JVM (used by the watchdogs). */
    private void exit(final int code) {
        shutdown("exit");
        Runtime.getRuntime().halt(code);
    }

    private void shutdown(final String why) {
        if (!closing.compareAndSet(false, true)) {
            // Someone else is closing: wait for them (bounded) so the JVM does not halt mid-close.
            try {
                stopped.await(20, java.util.concurrent.TimeUnit.SECONDS);
            } catch (final InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            return;
        }
        try {
            final OpenSearchRunner r = runner;
            if (r != null) {
                r.close();
            }
        } catch (final Throwable t) {
            ERR.println("engine: error while closing (" + why + "): " + t);
        } finally {
            stopped.countDown();
        }
    }
}
