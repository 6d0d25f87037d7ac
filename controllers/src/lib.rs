//! kplane's controllers. Each is an ordinary Kubernetes client over a `kube::Client`: in the
//! single binary that client is in-process; pointed at another API server, the same code runs
//! against a real cluster.

pub mod builtin_services;
pub mod discovery;
pub mod endpoint_informers;
pub mod endpoints;
pub mod endpointslice;
pub mod endpointslice_mirroring;
pub mod garbage_collector;
pub mod lb_ipam;
pub mod namespace;
pub mod node;
pub mod pod_selection;
pub mod podgc;
pub mod service_env;
pub mod workqueue;

// Process pods (container env, logs, probes, supervisor): declared here until the node agent's
// `node/mod.rs` takes them in.
#[path = "node/container_env.rs"]
pub mod container_env;
#[path = "node/logs.rs"]
pub mod logs;
#[path = "node/probes.rs"]
pub mod probes;
#[path = "node/process.rs"]
pub mod process;
