//! The Elasticsearch adapter: the store, its configuration, and the translation of the task
//! model into documents, mappings and requests.

pub(crate) mod bulk;
pub(crate) mod claim;
pub(crate) mod classify;
pub(crate) mod client;
pub mod config;
pub mod document;
pub(crate) mod lease;
pub(crate) mod maintenance;
pub mod mapping;
pub(crate) mod query;
pub(crate) mod recent;
pub mod store;
