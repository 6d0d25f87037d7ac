//! kplane's Kubernetes API server: HTTP (axum), storage (sled or memory), the registry of kinds
//! and their strategies, allocators, patching and authentication.
//!
//! Layers: `http` → `registry` → `storage`; `alloc`, `patch`, `auth`, `selector` and
//! `validation` are leaves. Only the registry touches storage; only http knows HTTP.

// `ApiError` carries the whole `Status` (details and causes); it lives on the cold path, so
// returning it by value is fine.
#![allow(clippy::result_large_err)]

pub mod alloc;
pub mod auth;
pub mod error;
pub mod http;
pub mod patch;
pub mod registry;
pub mod selector;
pub mod storage;
pub mod validation;

pub use error::{ApiError, ApiResult};
