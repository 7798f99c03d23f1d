//! The one place requests are sent and answers read.
//!
//! Every request goes through [`Http::send`]: it sends, reads the whole body, parses it as JSON,
//! and turns a non-2xx answer into an [`Error`] with [`classify`]. Nothing above this module sees
//! an HTTP status.

use elasticsearch::http::headers::{HeaderMap, HeaderValue, CONTENT_TYPE};
use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use super::classify::{classify, parse_retry_after, Context};
use crate::error::Error;

/// Characters left as they are in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'-')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes one path segment (an index name or a document id).
pub(crate) fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// A request body.
pub(crate) enum Body {
    /// A JSON document.
    Json(Value),
    /// A JSON document, already serialized.
    JsonBytes(Vec<u8>),
    /// Newline-delimited JSON (`_bulk`), already serialized.
    Ndjson(Vec<u8>),
}

/// The HTTP side of the store.
#[derive(Clone)]
pub(crate) struct Http {
    client: Elasticsearch,
}

impl Http {
    pub(crate) fn new(client: Elasticsearch) -> Self {
        Self { client }
    }

    /// Sends a request and returns the parsed JSON of a 2xx answer.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Body>,
        ctx: Context<'_>,
    ) -> Result<Value, Error> {
        let mut headers = HeaderMap::new();
        let bytes = match body {
            None => None,
            Some(Body::Json(value)) => {
                Some(serde_json::to_vec(&value).map_err(|e| Error::InvalidQuery {
                    field: "body",
                    reason: e.to_string(),
                })?)
            }
            Some(Body::JsonBytes(bytes)) => Some(bytes),
            Some(Body::Ndjson(bytes)) => {
                headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/x-ndjson"),
                );
                Some(bytes)
            }
        };
        let query = (!query.is_empty()).then_some(query);
        let response = self
            .client
            .send(method, path, headers, query, bytes, None)
            .await
            .map_err(transport_error)?;
        let status = response.status_code().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        let bytes = response.bytes().await.map_err(transport_error)?;
        let parsed = if bytes.is_empty() {
            Ok(Value::Null)
        } else {
            serde_json::from_slice::<Value>(&bytes)
        };
        if (200..300).contains(&status) {
            return parsed.map_err(|e| Error::MalformedResponse {
                status,
                reason: format!("body is not JSON ({} bytes): {e}", bytes.len()),
            });
        }
        let body = match parsed {
            Ok(body) => body,
            // An error page that is not JSON (a proxy's, a truncated body): keep its text.
            Err(_) => {
                Value::String(String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into_owned())
            }
        };
        let error = match body.get("error") {
            Some(error) => error.clone(),
            None => body,
        };
        Err(classify(status, retry_after, &error, ctx))
    }
}

fn transport_error(e: elasticsearch::Error) -> Error {
    if e.is_timeout() {
        Error::Timeout {
            reason: e.to_string(),
        }
    } else {
        Error::Transport {
            source: Box::new(e),
        }
    }
}
