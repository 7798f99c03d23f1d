//! `cargo xtask engine check [--nodes N]`: a smoke test of the engine over REST, covering every
//! API the library relies on. With `--nodes 3` (or more) it starts a private cluster and also
//! checks failover: closing the node that holds a primary promotes the replica and raises the
//! primary term.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::engine::{self, http_request, EngineOptions, HttpResponse};

const TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(nodes: u32) -> Result<()> {
    if nodes > 1 {
        let mut guard = engine::start_attached(&EngineOptions {
            nodes,
            ..EngineOptions::default()
        })?;
        let url = guard.url().to_string();
        println!(
            "private {nodes}-node engine, log {}",
            guard.log_path().display()
        );
        rest_checks(&url)?;
        failover_check(&mut guard)?;
        guard.stop()?;
    } else {
        let (url, guard) = engine::ensure_engine()?;
        rest_checks(&url)?;
        if let Some(g) = guard {
            g.stop()?;
        }
    }
    println!("engine check: ok");
    Ok(())
}

fn call(method: &str, url: &str, path: &str, body: Option<&str>) -> Result<HttpResponse> {
    http_request(method, url, path, body, TIMEOUT).with_context(|| format!("{method} {path}"))
}

fn expect(method: &str, url: &str, path: &str, body: Option<&str>, status: u16) -> Result<String> {
    let r = call(method, url, path, body)?;
    if r.status != status {
        bail!(
            "{method} {path}: expected HTTP {status}, got {}: {}",
            r.status,
            r.body
        );
    }
    Ok(r.body)
}

/// The number after `"key":` (first occurrence), enough for these fixed responses.
fn json_number(body: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let start = body.find(&pat)? + pat.len();
    let digits: String = body[start..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn rest_checks(url: &str) -> Result<()> {
    let root = expect("GET", url, "/", None, 200)?;
    let version = root
        .split("\"number\"")
        .nth(1)
        .and_then(|s| s.split('"').nth(1))
        .unwrap_or("?");
    println!("engine at {url}: version {version}");

    let index = format!("xtask-check-{}", std::process::id());
    let i = index.as_str();
    let _ = call("DELETE", url, &format!("/{i}"), None);

    expect(
        "PUT",
        url,
        &format!("/{i}"),
        Some(
            r#"{"settings":{"number_of_shards":1,"number_of_replicas":0},
                "mappings":{"dynamic":"strict","properties":{
                  "type":{"type":"keyword"},"x":{"type":"integer"},
                  "task":{"properties":{"taskType":{"type":"keyword"},"status":{"type":"keyword"},
                          "runAt":{"type":"date"},"attempts":{"type":"integer"}}}}}}"#,
        ),
        200,
    )?;
    println!("  create index with mapping: ok");

    let bulk = [
        r#"{"index":{"_id":"a"}}"#,
        r#"{"type":"task","task":{"taskType":"t1","status":"idle","runAt":"2024-01-01T00:00:00Z","attempts":0}}"#,
        r#"{"create":{"_id":"b"}}"#,
        r#"{"type":"task","task":{"taskType":"t2","status":"idle","runAt":"2024-01-02T00:00:00Z","attempts":0}}"#,
        r#"{"index":{"_id":"c"}}"#,
        r#"{"type":"task","task":{"taskType":"t1","status":"running","runAt":"2024-01-03T00:00:00Z","attempts":1}}"#,
    ]
    .join("\n")
        + "\n";
    let body = expect(
        "POST",
        url,
        &format!("/{i}/_bulk?refresh=true"),
        Some(&bulk),
        200,
    )?;
    ensure!(body.contains(r#""errors":false"#), "_bulk: {body}");
    println!("  _bulk: ok");

    let body = expect(
        "POST",
        url,
        &format!("/{i}/_update_by_query?refresh=true&conflicts=proceed"),
        Some(
            r#"{"query":{"term":{"task.status":"idle"}},
                "script":{"source":"ctx._source.x = params.v","lang":"painless","params":{"v":1}}}"#,
        ),
        200,
    )?;
    ensure!(
        json_number(&body, "updated") == Some(2),
        "_update_by_query: {body}"
    );
    println!("  _update_by_query (painless): ok, updated 2");

    let body = expect(
        "POST",
        url,
        &format!("/{i}/_search?seq_no_primary_term=true"),
        Some(r#"{"query":{"term":{"x":1}},"sort":[{"task.runAt":"asc"}]}"#),
        200,
    )?;
    ensure!(
        body.contains(r#""_seq_no""#) && body.contains(r#""_primary_term""#),
        "_search lacks _seq_no/_primary_term: {body}"
    );
    println!("  _search with seq_no_primary_term: ok");

    let body = expect(
        "POST",
        url,
        &format!("/{i}/_mget"),
        Some(r#"{"ids":["a","b","missing"]}"#),
        200,
    )?;
    ensure!(
        body.matches(r#""found":true"#).count() == 2 && body.contains(r#""found":false"#),
        "_mget: {body}"
    );
    println!("  _mget: ok");

    let body = expect(
        "POST",
        url,
        &format!("/{i}/_count"),
        Some(r#"{"query":{"term":{"task.taskType":"t1"}}}"#),
        200,
    )?;
    ensure!(json_number(&body, "count") == Some(2), "_count: {body}");
    println!("  _count: ok");

    let doc = expect("GET", url, &format!("/{i}/_doc/a"), None, 200)?;
    let seq = json_number(&doc, "_seq_no").context("no _seq_no")?;
    let term = json_number(&doc, "_primary_term").context("no _primary_term")?;
    let update = format!("/{i}/_update/a?if_seq_no={seq}&if_primary_term={term}");
    expect(
        "POST",
        url,
        &update,
        Some(r#"{"doc":{"task":{"status":"running"}}}"#),
        200,
    )?;
    expect(
        "POST",
        url,
        &update,
        Some(r#"{"doc":{"task":{"status":"idle"}}}"#),
        409,
    )?;
    println!("  conditional _update (if_seq_no/if_primary_term): ok, stale one got 409");

    expect(
        "PUT",
        url,
        &format!("/{i}/_create/a"),
        Some(r#"{"type":"task"}"#),
        409,
    )?;
    println!("  _create of an existing id: 409 ok");

    expect("DELETE", url, &format!("/{i}"), None, 200)?;
    Ok(())
}

fn failover_check(guard: &mut engine::EngineGuard) -> Result<()> {
    let url = guard.url().to_string();
    let i = "xtask-failover";
    expect(
        "PUT",
        &url,
        &format!("/{i}"),
        Some(r#"{"settings":{"number_of_shards":1,"number_of_replicas":1}}"#),
        200,
    )?;
    expect(
        "GET",
        &url,
        &format!("/_cluster/health/{i}?wait_for_status=green&timeout=60s"),
        None,
        200,
    )?;
    let body = expect(
        "PUT",
        &url,
        &format!("/{i}/_doc/1?refresh=true"),
        Some(r#"{"n":1}"#),
        201,
    )?;
    let term_before = json_number(&body, "_primary_term").context("no _primary_term")?;

    let shards = expect(
        "GET",
        &url,
        &format!("/_cat/shards/{i}?h=prirep,node&format=json"),
        None,
        200,
    )?;
    let primary_node: usize = shards
        .split(r#""prirep":"p","node":"engine-node-"#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no primary in {shards}"))?;
    let other = guard
        .node_urls()
        .iter()
        .enumerate()
        .find(|(n, _)| n + 1 != primary_node)
        .map(|(_, u)| u.clone())
        .context("no other node")?;

    guard.stop_node(primary_node)?;
    expect(
        "GET",
        &other,
        &format!("/_cluster/health/{i}?wait_for_status=yellow&timeout=60s"),
        None,
        200,
    )?;
    let body = expect(
        "PUT",
        &other,
        &format!("/{i}/_doc/2?refresh=true"),
        Some(r#"{"n":2}"#),
        201,
    )?;
    let term_after = json_number(&body, "_primary_term").context("no _primary_term")?;
    ensure!(
        term_after > term_before,
        "primary term did not rise after failover: {term_before} -> {term_after}"
    );
    println!(
        "  failover: closed node {primary_node} (primary); replica promoted, primary term {term_before} -> {term_after}"
    );

    guard.start_node(primary_node)?;
    expect(
        "GET",
        &other,
        &format!("/_cluster/health/{i}?wait_for_status=green&timeout=60s"),
        None,
        200,
    )?;
    println!("  node {primary_node} restarted; cluster green again");
    Ok(())
}
