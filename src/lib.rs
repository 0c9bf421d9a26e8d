//! settingsd: a durable, embedded settings service.
//!
//! It keeps per-account settings resources (Twilio Video's Recording and
//! Composition Settings) behind a storage seam (sled by default) and serves
//! them over gRPC, with server reflection and health, and over a thin
//! Twilio-shaped HTTP bridge so Twilio's helper libraries can use it as a
//! persistent local emulator.
//!
//! # Layout (dependencies point down this list, never up)
//! - [`cli`]: the command line; `main.rs` only calls it. `bench` is the
//!   load generator it runs.
//! - [`server`]: wiring: listeners, limits, idle timeout, health,
//!   reflection, shutdown, the ready line, the bridge's in-process backend.
//! - [`backup`]: export to and import from JSON lines (rendered as the gRPC
//!   edge renders a record).
//! - [`bridge`]: the Twilio-shaped HTTP bridge: routes, form decoding,
//!   Twilio's JSON and error bodies. Knows only the contract.
//! - `grpc`: the services: one core for every resource (auth, limits,
//!   contract <-> domain, `Error` -> `Status`), a thin binding per resource.
//! - [`metrics`], [`request_log`]: what the transports report of each
//!   request, for operators (Prometheus) and test suites (recent requests);
//!   the store reports its commits to metrics through
//!   [`store::StoreObserver`].
//! - [`store`]: the [`store::Store`] trait and its contract; [`store::sled`]
//!   is the embedded implementation (codec, group commit, recovery).
//! - [`auth`]: credentials (accounts file or open mode) and who a caller is.
//! - [`contract`]: the code generated from `proto/` ([`pb`]) and one shape
//!   for every resource's messages.
//! - [`kinds`]: declared settings kinds (a kinds file, its .proto files
//!   compiled at start), their schema evolution rules and AIP-134 update
//!   masks, and the catalog of every kind a server serves.
//! - [`domain`], [`resource`], [`error`]: validated values, the settings
//!   record and patch, the table of resources, the one domain error.

pub mod auth;
pub mod backup;
mod bench;
pub mod bridge;
pub mod cli;
pub mod contract;
pub mod domain;
pub mod error;
mod grpc;
pub mod kinds;
pub mod metrics;
pub mod request_log;
pub mod resource;
pub mod server;
pub mod store;

pub use contract::pb;
pub use error::Error;
pub use grpc::{parse_patch, PublicUrl};
