//! Configuring a store: where the engine is, how to authenticate, which index, and how writes
//! are refreshed.
//!
//! Configuration comes from code ([`StoreBuilder`]'s `with_*` methods) or from the environment
//! ([`StoreBuilder::from_env`]); code set after `from_env` wins.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `ELASTICSEARCH_URL` | engine URL; `user:password@` in it is taken as basic auth and removed | `http://127.0.0.1:9200` |
//! | `ELASTICSEARCH_USERNAME` / `ELASTICSEARCH_PASSWORD` | basic auth | none |
//! | `ELASTICSEARCH_API_KEY` | API key, base64 `id:key` as the engine issues it | none |
//! | `ELASTICSEARCH_CA_CERT` | path to a PEM CA certificate for HTTPS | system roots |
//! | `ES_TASK_STORE_INDEX` | index (alias) name | `tasks` |
//! | `ES_TASK_STORE_REFRESH` | write refresh policy: `false`, `wait_for`, `true` | `false` |
//! | `ES_TASK_STORE_REQUEST_TIMEOUT_SECS` | per-request timeout in seconds | `30` |
//! | `ES_TASK_STORE_CLAIM_STRATEGY` | `optimistic` or `update_by_query` | `optimistic` |
//!
//! Secrets are held in a type whose `Debug` prints `[redacted]`, and are never logged.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::Elasticsearch;
use url::Url;

use crate::claim::ClaimStrategy;
use crate::clock::{Clock, SystemClock};
use crate::error::Error;

/// Default engine URL.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9200";
/// Default index (alias) name.
pub const DEFAULT_INDEX: &str = "tasks";
/// Default claim oversampling factor.
pub const DEFAULT_CLAIM_OVERSAMPLING: usize = 4;
/// Default per-request timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// When a write becomes visible to search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Refresh {
    /// Visible after the index's next periodic refresh (fastest; the default).
    #[default]
    False,
    /// The write returns once a refresh has made it visible.
    WaitFor,
    /// The write forces a refresh (costly under load; for tests).
    True,
}

impl Refresh {
    /// The `refresh` query parameter value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Refresh::False => "false",
            Refresh::WaitFor => "wait_for",
            Refresh::True => "true",
        }
    }
}

impl std::str::FromStr for Refresh {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "false" => Ok(Refresh::False),
            "wait_for" => Ok(Refresh::WaitFor),
            "true" => Ok(Refresh::True),
            other => Err(Error::Config {
                key: "refresh".into(),
                reason: format!("{other:?} is not one of false, wait_for, true"),
            }),
        }
    }
}

/// A string that never shows in `Debug` or `Display` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    #[must_use]
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How the store authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// HTTP basic authentication.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
    /// An API key, base64 of `id:key` (the `encoded` value the engine returns).
    ApiKey(Secret),
}

/// Builds an [`ElasticsearchTaskStore`](crate::ElasticsearchTaskStore).
///
/// ```
/// use es_task_store::{ElasticsearchTaskStore, Refresh};
///
/// let store = ElasticsearchTaskStore::builder()
///     .with_url("http://127.0.0.1:9200")
///     .with_index("my-tasks")
///     .with_basic_auth("elastic", "changeme")
///     .with_refresh(Refresh::WaitFor)
///     .build()?;
/// assert_eq!(store.index(), "my-tasks");
/// assert!(!format!("{store:?}").contains("changeme"));
/// # Ok::<(), es_task_store::Error>(())
/// ```
#[derive(Clone)]
pub struct StoreBuilder {
    pub(crate) url: String,
    pub(crate) index: String,
    pub(crate) auth: Option<Auth>,
    pub(crate) ca_cert_path: Option<String>,
    pub(crate) ca_cert_pem: Option<Vec<u8>>,
    pub(crate) refresh: Refresh,
    pub(crate) request_timeout: Duration,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) require_alias: bool,
    pub(crate) claim_strategy: ClaimStrategy,
    pub(crate) claim_oversampling: usize,
}

impl fmt::Debug for StoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry credentials (user:password@ or a query string): show neither.
        let url = redact_url_text(&self.url);
        let url = url
            .split_once('?')
            .map_or(url.as_str(), |(base, _)| base)
            .to_owned();
        f.debug_struct("StoreBuilder")
            .field("url", &url)
            .field("index", &self.index)
            .field("auth", &self.auth)
            .field("ca_cert_path", &self.ca_cert_path)
            .field("ca_cert_pem", &self.ca_cert_pem.as_ref().map(|_| "[pem]"))
            .field("refresh", &self.refresh)
            .field("request_timeout", &self.request_timeout)
            .field("clock", &self.clock)
            .field("require_alias", &self.require_alias)
            .field("claim_strategy", &self.claim_strategy)
            .field("claim_oversampling", &self.claim_oversampling)
            .finish()
    }
}

impl Default for StoreBuilder {
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.to_owned(),
            index: DEFAULT_INDEX.to_owned(),
            auth: None,
            ca_cert_path: None,
            ca_cert_pem: None,
            refresh: Refresh::False,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            clock: Arc::new(SystemClock),
            require_alias: true,
            claim_strategy: ClaimStrategy::Optimistic,
            claim_oversampling: DEFAULT_CLAIM_OVERSAMPLING,
        }
    }
}

impl StoreBuilder {
    /// Defaults: `http://127.0.0.1:9200`, index `tasks`, no auth.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Defaults overridden by the environment variables of the module docs.
    pub fn from_env() -> Result<Self, Error> {
        Self::new().with_env(|key| std::env::var(key).ok())
    }

    /// Like [`from_env`](Self::from_env) with a custom lookup (for tests and embedding).
    pub fn with_env(mut self, var: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let get = |key: &str| var(key).filter(|v| !v.trim().is_empty());
        if let Some(url) = get("ELASTICSEARCH_URL") {
            self.url = url;
        }
        match (get("ELASTICSEARCH_USERNAME"), get("ELASTICSEARCH_PASSWORD")) {
            (Some(username), password) => {
                self.auth = Some(Auth::Basic {
                    username,
                    password: Secret::new(password.unwrap_or_default()),
                });
            }
            (None, Some(_)) => {
                return Err(Error::Config {
                    key: "ELASTICSEARCH_PASSWORD".into(),
                    reason: "is set but ELASTICSEARCH_USERNAME is not".into(),
                })
            }
            (None, None) => {}
        }
        if let Some(key) = get("ELASTICSEARCH_API_KEY") {
            self.auth = Some(Auth::ApiKey(Secret::new(key)));
        }
        if let Some(path) = get("ELASTICSEARCH_CA_CERT") {
            self.ca_cert_path = Some(path);
        }
        if let Some(index) = get("ES_TASK_STORE_INDEX") {
            self.index = index;
        }
        if let Some(refresh) = get("ES_TASK_STORE_REFRESH") {
            self.refresh = refresh.parse().map_err(|_| Error::Config {
                key: "ES_TASK_STORE_REFRESH".into(),
                reason: format!("{refresh:?} is not one of false, wait_for, true"),
            })?;
        }
        if let Some(strategy) = get("ES_TASK_STORE_CLAIM_STRATEGY") {
            self.claim_strategy = match strategy.as_str() {
                "optimistic" => ClaimStrategy::Optimistic,
                "update_by_query" => ClaimStrategy::UpdateByQuery,
                other => {
                    return Err(Error::Config {
                        key: "ES_TASK_STORE_CLAIM_STRATEGY".into(),
                        reason: format!("{other:?} is not one of optimistic, update_by_query"),
                    })
                }
            };
        }
        if let Some(secs) = get("ES_TASK_STORE_REQUEST_TIMEOUT_SECS") {
            let secs: u64 = secs
                .parse()
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| Error::Config {
                    key: "ES_TASK_STORE_REQUEST_TIMEOUT_SECS".into(),
                    reason: format!("{secs:?} is not a whole number of seconds greater than zero"),
                })?;
            self.request_timeout = Duration::from_secs(secs);
        }
        Ok(self)
    }

    /// Engine URL (`http` or `https`).
    #[must_use]
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// Index (alias) name.
    #[must_use]
    pub fn with_index(mut self, index: impl Into<String>) -> Self {
        self.index = index.into();
        self
    }

    /// Basic authentication.
    #[must_use]
    pub fn with_basic_auth(
        mut self,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.auth = Some(Auth::Basic {
            username: username.into(),
            password: Secret::new(password),
        });
        self
    }

    /// API key authentication (base64 `id:key`).
    #[must_use]
    pub fn with_api_key(mut self, encoded: impl Into<String>) -> Self {
        self.auth = Some(Auth::ApiKey(Secret::new(encoded)));
        self
    }

    /// Trust this PEM CA certificate (for a self-signed engine).
    #[must_use]
    pub fn with_ca_cert_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_cert_pem = Some(pem.into());
        self
    }

    /// Write refresh policy.
    #[must_use]
    pub fn with_refresh(mut self, refresh: Refresh) -> Self {
        self.refresh = refresh;
        self
    }

    /// Per-request timeout.
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The clock claims and defaults read "now" from.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Whether writes must go through an alias (default `true`). With it, a write to an index
    /// that was deleted fails with [`Error::IndexMissing`] instead of letting the engine
    /// re-create the index with a dynamic mapping. Turn it off only to use a concrete index
    /// created elsewhere.
    #[must_use]
    pub fn with_require_alias(mut self, require_alias: bool) -> Self {
        self.require_alias = require_alias;
        self
    }

    /// How claims are made (default [`ClaimStrategy::Optimistic`]).
    #[must_use]
    pub fn with_claim_strategy(mut self, strategy: ClaimStrategy) -> Self {
        self.claim_strategy = strategy;
        self
    }

    /// How many candidates an optimistic claim searches for, as a multiple of its capacity
    /// (default 4, at least 1). More candidates mean fewer empty-handed claims under
    /// contention, at the cost of larger searches.
    #[must_use]
    pub fn with_claim_oversampling(mut self, factor: usize) -> Self {
        self.claim_oversampling = factor.max(1);
        self
    }

    /// Builds the store. Makes no request.
    pub fn build(self) -> Result<crate::ElasticsearchTaskStore, Error> {
        validate_index_name(&self.index)?;
        if self.request_timeout.is_zero() {
            return Err(Error::Config {
                key: "request_timeout".into(),
                reason: "must be greater than zero".into(),
            });
        }
        if let Some(Auth::ApiKey(key)) = &self.auth {
            // Refused here rather than when the first request builds its header.
            let printable = key.expose().bytes().all(|b| (0x21..0x7f).contains(&b));
            if !printable || key.expose().is_empty() {
                return Err(Error::Config {
                    key: "ELASTICSEARCH_API_KEY".into(),
                    reason: "must be the printable base64 `encoded` value the engine issued".into(),
                });
            }
        }
        let (url, auth) = self.connection()?;
        let mut transport =
            TransportBuilder::new(SingleNodeConnectionPool::new(url)).timeout(self.request_timeout);
        if let Some(auth) = auth {
            transport = transport.auth(match auth {
                Auth::Basic { username, password } => {
                    Credentials::Basic(username, password.expose().to_owned())
                }
                Auth::ApiKey(key) => Credentials::EncodedApiKey(key.expose().to_owned()),
            });
        }
        if let Some(pem) = self.ca_pem()? {
            let cert = Certificate::from_pem(&pem).map_err(|e| Error::Config {
                key: "ELASTICSEARCH_CA_CERT".into(),
                reason: format!("not a PEM certificate: {e}"),
            })?;
            transport = transport.cert_validation(CertificateValidation::Full(cert));
        }
        let transport = transport.build().map_err(|e| Error::Config {
            key: "ELASTICSEARCH_URL".into(),
            reason: format!("cannot build the HTTP client: {e}"),
        })?;
        Ok(crate::ElasticsearchTaskStore::from_parts(
            Elasticsearch::new(transport),
            self,
        ))
    }

    /// The URL without credentials, and the credentials (those in the URL count as basic auth
    /// unless others were given).
    fn connection(&self) -> Result<(Url, Option<Auth>), Error> {
        let mut url = Url::parse(&self.url).map_err(|e| Error::Config {
            key: "ELASTICSEARCH_URL".into(),
            reason: format!("{:?} is not a URL: {e}", redact_url_text(&self.url)),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Config {
                key: "ELASTICSEARCH_URL".into(),
                reason: format!("scheme must be http or https, got {:?}", url.scheme()),
            });
        }
        let mut auth = self.auth.clone();
        if !url.username().is_empty() {
            let username = percent_decode(url.username());
            let password = url.password().map(percent_decode).unwrap_or_default();
            if auth.is_none() {
                auth = Some(Auth::Basic {
                    username,
                    password: Secret::new(password),
                });
            }
            // Setting empty credentials on an http(s) URL cannot fail.
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        Ok((url, auth))
    }

    fn ca_pem(&self) -> Result<Option<Vec<u8>>, Error> {
        if let Some(pem) = &self.ca_cert_pem {
            return Ok(Some(pem.clone()));
        }
        match &self.ca_cert_path {
            None => Ok(None),
            Some(path) => std::fs::read(path).map(Some).map_err(|e| Error::Config {
                key: "ELASTICSEARCH_CA_CERT".into(),
                reason: format!("cannot read {path:?}: {e}"),
            }),
        }
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// A URL string with anything between `://` and `@` hidden, for error messages.
fn redact_url_text(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(start), Some(at)) if at > start => {
            format!("{}://[redacted]@{}", &url[..start], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// The engine's index naming rules, checked before any request.
pub(crate) fn validate_index_name(index: &str) -> Result<(), Error> {
    let bad = |reason: &str| {
        Err(Error::Config {
            key: "index".into(),
            reason: format!("{index:?} {reason}"),
        })
    };
    if index.is_empty() {
        return bad("is empty");
    }
    if index.len() > 200 {
        return bad("is longer than 200 bytes");
    }
    if index != index.to_lowercase() {
        return bad("must be lowercase");
    }
    if index.starts_with(['-', '_', '+']) || index == "." || index == ".." {
        return bad("must not start with -, _ or + or be . or ..");
    }
    if index.chars().any(|c| {
        matches!(
            c,
            '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ',' | '#' | ':' | ' '
        ) || c.is_control()
    }) {
        return bad("must not contain \\ / * ? \" < > | , # : space or control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn credentials_in_the_url_become_basic_auth_and_leave_the_url() {
        let builder = StoreBuilder::new()
            .with_env(env(&[(
                "ELASTICSEARCH_URL",
                "https://elastic:s%40cret@example.test:9243",
            )]))
            .unwrap();
        let (url, auth) = builder.connection().unwrap();
        assert_eq!(url.as_str(), "https://example.test:9243/");
        assert_eq!(
            auth,
            Some(Auth::Basic {
                username: "elastic".into(),
                password: Secret::new("s@cret")
            })
        );
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let builder = StoreBuilder::new()
            .with_env(env(&[
                ("ELASTICSEARCH_USERNAME", "elastic"),
                ("ELASTICSEARCH_PASSWORD", "hunter2-password"),
            ]))
            .unwrap();
        assert!(!format!("{builder:?}").contains("hunter2"));
        let store = builder.clone().build().unwrap();
        assert!(!format!("{store:?}").contains("hunter2"));
        let in_url = StoreBuilder::new()
            .with_env(env(&[(
                "ELASTICSEARCH_URL",
                "https://elastic:S3cretPW@example.test:9243/?token=abc",
            )]))
            .unwrap();
        let debug = format!("{in_url:?}");
        assert!(
            !debug.contains("S3cretPW") && !debug.contains("token=abc"),
            "{debug}"
        );
        let keyed = StoreBuilder::new()
            .with_api_key("c2VjcmV0LWFwaS1rZXk=")
            .build()
            .unwrap();
        assert!(!format!("{keyed:?}").contains("c2VjcmV0LWFwaS1rZXk"));
        let url_creds = StoreBuilder::new()
            .with_url("http://u:pw-in-url@127.0.0.1:1")
            .build()
            .unwrap();
        assert!(!format!("{url_creds:?}").contains("pw-in-url"));
    }

    #[test]
    fn bad_configuration_names_the_key() {
        let err = StoreBuilder::new()
            .with_env(env(&[("ES_TASK_STORE_REFRESH", "sometimes")]))
            .unwrap_err();
        assert!(matches!(&err, Error::Config { key, .. } if key == "ES_TASK_STORE_REFRESH"));
        let err = StoreBuilder::new()
            .with_env(env(&[("ES_TASK_STORE_REQUEST_TIMEOUT_SECS", "0")]))
            .unwrap_err();
        assert!(
            matches!(&err, Error::Config { key, .. } if key == "ES_TASK_STORE_REQUEST_TIMEOUT_SECS")
        );
        let err = StoreBuilder::new().with_url("ftp://x").build().unwrap_err();
        assert!(matches!(&err, Error::Config { key, .. } if key == "ELASTICSEARCH_URL"));
        let err = StoreBuilder::new()
            .with_url("http://user:topsecret@[bad")
            .build()
            .unwrap_err();
        assert!(!err.to_string().contains("topsecret"), "{err}");
        let err = StoreBuilder::new()
            .with_api_key("abc\nX-Evil: 1")
            .build()
            .unwrap_err();
        assert!(matches!(&err, Error::Config { key, .. } if key == "ELASTICSEARCH_API_KEY"));
        let err = StoreBuilder::new()
            .with_request_timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(matches!(&err, Error::Config { key, .. } if key == "request_timeout"));
        let err = StoreBuilder::new()
            .with_ca_cert_pem(b"not a cert".to_vec())
            .build()
            .unwrap_err();
        assert!(matches!(&err, Error::Config { key, .. } if key == "ELASTICSEARCH_CA_CERT"));
    }

    #[test]
    fn index_names_follow_the_engine_rules() {
        for bad in ["", "Tasks", "_tasks", "a/b", "a b", "a,b", "a:b"] {
            assert!(validate_index_name(bad).is_err(), "{bad:?}");
        }
        for good in ["tasks", ".kibana_task_manager", "t-1_x"] {
            assert!(validate_index_name(good).is_ok(), "{good:?}");
        }
    }
}
