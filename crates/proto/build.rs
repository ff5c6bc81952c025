//! Compiles `proto/` with a vendored protoc, so a fresh machine needs no system protoc.
fn main() {
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc is available");
    std::env::set_var("PROTOC", protoc);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        root.join("carrier/config/v1/config.proto"),
        root.join("carrier/records/v1/records.proto"),
        root.join("carrier/delivery/v1/control.proto"),
    ];
    // The whole directory: a new .proto file (listed above) must also re-run this script.
    println!("cargo:rerun-if-changed={}", root.display());
    println!("cargo:rerun-if-changed=build.rs");
    tonic_prost_build::configure()
        .compile_protos(&files, &[root])
        .expect("proto files compile");
}
