//! Build script of `bitnet-proto`: compiles `proto/**/*.proto` with `protox` (pure Rust, no system
//! `protoc`) into a `FileDescriptorSet`, writes it to `$OUT_DIR/bitnet_descriptor.bin` (for server
//! reflection) and generates messages plus client and server code with `tonic-prost-build`.

use prost::Message;
use std::path::PathBuf;

const PROTOS: [&str; 2] = ["bitnet/v1/serving.proto", "bitnet/worker/v1/worker.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
    let fds = protox::compile(PROTOS, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("bitnet_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
