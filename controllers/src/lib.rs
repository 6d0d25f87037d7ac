//! kplane's controllers. Each is an ordinary Kubernetes client over a `kube::Client`: in the
//! single binary that client is in-process; pointed at another API server, the same code runs
//! against a real cluster.

pub mod builtin_services;
pub mod deployment;
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
pub mod replicaset;
pub mod service_env;
pub mod workqueue;
