//! Leases (`coordination.k8s.io/v1`), used for node heartbeats and leader election.

use super::{ResourceInfo, Scope, Strategy};

pub static INFO: ResourceInfo = ResourceInfo {
    group: "coordination.k8s.io",
    version: "v1",
    kind: "Lease",
    plural: "leases",
    singular: "lease",
    short_names: &[],
    categories: &[],
    scope: Scope::Namespaced,
    subresources: &[],
};

pub struct Leases;

impl Strategy for Leases {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }
}
