//! misim's end-to-end tests over the wire: the whole system in-process on ephemeral loopback ports,
//! driven as users and their SDKs drive it. One test binary (one link) for all of them; each module
//! is one area.

mod aad_common;
mod lifecycle_common;

mod aad_https;
mod aad_renewal;
mod aad_rotation;
mod app_roles;
mod app_service;
mod clock;
mod control_plane_auth;
mod damage;
mod ec_identities;
mod events;
mod faults;
mod flow;
mod imds_extension;
mod imds_metadata;
mod lifecycle_scale_set;
mod lifecycle_system_assigned;
mod lifecycle_user_assigned;
mod observability;
mod propagation;
mod rbac_rest;
mod rbac_vault;
mod up_edges;
mod workload_identity;
