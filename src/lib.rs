//! MCP: a small control plane for containers. `mcp` (src/cli) pushes service
//! definitions over gRPC (src/grpc) to `mcp-agent`, whose actors (src/actors)
//! keep the registry (src/registry) and drive the runtime (src/runtime).

pub mod actors;
pub mod agent;
pub mod cli;
pub mod files;
pub mod names;
pub mod node_info;
pub mod plan;
pub mod policy;
pub mod registry;
pub mod routes;
pub mod runtime;
pub mod secrets;
pub mod spec;

/// Generated gRPC types and services of `proto/mcp/v1/agent.proto`,
/// `files.proto`, `logs.proto` and `secrets.proto`.
pub mod proto {
    tonic::include_proto!("mcp.v1");
}
pub mod grpc;
pub mod mcias;
