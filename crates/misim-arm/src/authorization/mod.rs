//! Authorization: Azure RBAC role assignments and their evaluation ([`rbac`]) over Azure's
//! built-in role definitions ([`roles`]).

pub(crate) mod rbac;
pub(crate) mod roles;
