//! Integration tests: one binary, every test against real sockets, the real
//! sled store in its own temporary directory, and the generated tonic client.

mod etcd_cluster;
mod helpers;

mod admin;
mod auth;
mod backup;
mod conditional;
mod crash;
mod emulator;
mod etcd;
mod etcd_consistency;
mod etcd_faults;
mod faults;
mod grpc_settings;
mod history;
mod http_bridge;
mod introspection;
mod kinds;
mod kinds_backup;
mod kinds_http;
mod kinds_operations;
mod limits;
mod powerloss;
mod process;
mod real_io_faults;
mod twilio_libraries;
mod watch;
