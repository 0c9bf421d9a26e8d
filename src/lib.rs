//! settingsd: a durable, embedded settings service.
//!
//! It keeps per-account settings (first: Twilio Video's Recording Settings)
//! in sled and serves them over gRPC, with server reflection and health, and
//! over a thin Twilio-shaped HTTP bridge so Twilio's helper libraries can use
//! it as a persistent local emulator.
//!
//! # Layout
//! - [`domain`]: validated SIDs and URLs, the settings record, the patch a
//!   Set applies. No transport or storage types.
//! - [`store`]: the sled store: keys, value encoding, group commit.
//! - [`auth`]: credentials (accounts file or open mode) and the account a
//!   caller may act for.
//! - [`grpc`]: the gRPC service: auth, proto <-> domain, errors -> `Status`.
//! - [`http`]: the Twilio-shaped HTTP bridge: form -> gRPC request, `Status`
//!   -> Twilio error body. No logic of its own.
//! - [`limits`]: connection, in-flight, size and time limits against abuse.
//! - [`idle`]: the idle timeout: closing connections no request is using.
//! - [`server`]: wiring: listeners, health, reflection, graceful shutdown.
//! - [`bench`]: the load generator (`settingsd bench`).
//! - [`backup`]: export to and import from JSON lines.
//! - [`cli`]: the command line (`serve`, `get`, `set`, `bridge`, `export`, `import`); `main.rs` only calls it.
//! - [`pb`]: the code generated from `proto/settingsd/v1`.

pub mod auth;
pub mod backup;
pub mod bench;
pub mod cli;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod http;
pub mod idle;
pub mod limits;
pub mod server;
pub mod store;
pub mod twilio;

pub use error::Error;

/// Generated from `proto/settingsd/v1` by `build.rs`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("settingsd.v1");

    /// The encoded descriptor set of `proto/` (with imports), for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("settingsd_descriptor");
}
