//! Integration tests: one binary, every test against real sockets, the real
//! sled store in its own temporary directory, and the generated tonic client.

mod helpers;

mod grpc_settings;
mod introspection;
mod process;
