//! Compiles `proto/` into Rust with protox (a pure-Rust protobuf compiler, so a
//! fresh machine needs no system `protoc`) and tonic-prost-build, and writes the
//! encoded descriptor set that the reflection service serves. Also compiles
//! the vendored etcd v3 API (`proto/vendor/etcd`) into a client only, for the
//! etcd backend: generating it here, with the same protox pipeline, is what
//! keeps the build free of a system `protoc` (the `etcd-client` crate's build
//! needs one).

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/settingsd/v1/recording_settings.proto",
    "proto/settingsd/v1/composition_settings.proto",
    "proto/settingsd/v1/admin.proto",
    "proto/settingsd/v1/settings_service.proto",
];

/// etcd's v3 API; `rpc.proto` imports the other two by bare name.
const ETCD_PROTOS: &[&str] = &["rpc.proto", "kv.proto", "auth.proto"];
const ETCD_ROOT: &str = "proto/vendor/etcd";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }

    let fds = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("settingsd_descriptor.bin"),
        fds.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;

    let etcd = protox::compile(ETCD_PROTOS, [ETCD_ROOT])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(etcd)?;
    Ok(())
}
