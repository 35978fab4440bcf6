//! Compiles the wire contract with a pure-Rust protobuf compiler, so building
//! fleetban needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/fleetban/v1/agent.proto",
        "proto/fleetban/v1/enroll.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // The rpc is named `Connect`; the generated transport helper of the
        // same name would clash, and clients build their `Channel` themselves.
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
