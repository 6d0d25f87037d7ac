//! kplane's controllers. Each is an ordinary Kubernetes client over a `kube::Client`: in the
//! single binary that client is in-process; pointed at another API server, the same code runs
//! against a real cluster.

pub mod builtin_services;
pub mod lb_ipam;
