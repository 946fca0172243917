// protoc comes from the protoc-bin-vendored crate so a fresh machine needs no
// system package; PROTOC in the environment still wins.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        // JSON output of the CLI is the wire types themselves.
        .type_attribute(".mcp.v1", "#[derive(serde::Serialize)]")
        // A secret's value is never printed: its Debug is written by hand
        // (src/secrets.rs) and it has no JSON form.
        .skip_debug([".mcp.v1.SetSecretRequest"])
        .field_attribute(".mcp.v1.SetSecretRequest.value", "#[serde(skip)]")
        .compile_protos(
            &[
                "proto/mcp/v1/agent.proto",
                "proto/mcp/v1/files.proto",
                "proto/mcp/v1/logs.proto",
                "proto/mcp/v1/secrets.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
