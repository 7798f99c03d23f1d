//! Per-task CPU cost of the library's hot paths, without the engine: encoding a task into its
//! document, decoding a search hit back into a task, and building one task's claim line.
//!
//! `cargo bench --bench codec` (also run by `cargo xtask bench`, which copies the figures into
//! BENCHMARKS.md).

use std::hint::black_box;

use chrono::{TimeDelta, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use es_task_store::claim::claim_patch;
use es_task_store::es::document::{decode_document, encode_document, encode_patch, write_document};
use es_task_store::{ConcreteTaskInstance, TaskInstance, Version};
use serde_json::{json, Value};

fn sample() -> ConcreteTaskInstance {
    let mut task = TaskInstance::new("email.send")
        .with_id("0f8fad5b-d9cb-469f-a165-70867728950e")
        .unwrap()
        .with_params(json!({ "to": "user@example.com", "template": "welcome", "locale": "en", "retries": 3 }))
        .with_state(json!({ "sent": 0 }))
        .with_scope(["mail"])
        .into_concrete(Utc::now())
        .unwrap();
    task.version = Some(Version::new(12, 1));
    task
}

fn hit(task: &ConcreteTaskInstance) -> Value {
    json!({
        "_id": task.id.document_id(),
        "_seq_no": 12,
        "_primary_term": 1,
        "_source": encode_document(task, Utc::now()),
    })
}

fn codec(c: &mut Criterion) {
    let task = sample();
    let now = Utc::now();
    let mut buf = Vec::with_capacity(1024);
    c.bench_function("write_document", |b| {
        b.iter(|| {
            buf.clear();
            write_document(&mut buf, black_box(&task), now);
            buf.len()
        })
    });
    let doc = encode_document(&task, now);
    let doc_id = task.id.document_id();
    c.bench_function("decode_document", |b| {
        b.iter(|| {
            decode_document(
                black_box(&doc_id),
                Some(Version::new(12, 1)),
                black_box(&doc),
            )
            .unwrap()
        })
    });
    // The decode path of a claim: from the bytes of a search hit.
    let hit_bytes = serde_json::to_vec(&hit(&task)).unwrap();
    c.bench_function("decode_search_hit_bytes", |b| {
        b.iter(|| {
            let hit: Value = serde_json::from_slice(black_box(&hit_bytes)).unwrap();
            let version = Version::new(
                hit["_seq_no"].as_i64().unwrap(),
                hit["_primary_term"].as_i64().unwrap(),
            );
            decode_document(hit["_id"].as_str().unwrap(), Some(version), &hit["_source"]).unwrap()
        })
    });
    // One task's line pair in a claim's conditional _bulk.
    c.bench_function("claim_line", |b| {
        b.iter(|| {
            let patch = claim_patch(black_box(&task), "worker-1", now, TimeDelta::minutes(5));
            let action = json!({ "update": { "_id": task.id.document_id(), "if_seq_no": 12, "if_primary_term": 1 } });
            let mut line = serde_json::to_vec(&action).unwrap();
            line.push(b'\n');
            serde_json::to_writer(&mut line, &json!({ "doc": encode_patch(&patch, now) })).unwrap();
            line
        })
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
