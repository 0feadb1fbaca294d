//! [`RunFailure`]: the start-up failures every party's `RunError` shares (store, serving), and
//! [`run_failure_from!`](crate::run_failure_from) for the `From` impls that keep `?` working.

/// A party could not start or stopped serving: its store could not be opened or a listener failed.
/// Each party's `RunError` wraps it transparently (same message and source as the inner error).
#[derive(Debug, thiserror::Error)]
pub enum RunFailure {
    /// The store could not be opened (e.g. locked by another process, unreadable).
    #[error(transparent)]
    Store(#[from] crate::StoreError),
    /// Serving failed (bind, TLS or server error).
    #[error(transparent)]
    Serve(#[from] crate::serve::ServeError),
}

/// Implements `From<StoreError>` and `From<ServeError>` for a party's `RunError` whose
/// `Start(RunFailure)` variant wraps a [`RunFailure`], so `?` on either error still works.
#[macro_export]
macro_rules! run_failure_from {
    ($error:ident) => {
        impl ::core::convert::From<$crate::StoreError> for $error {
            fn from(e: $crate::StoreError) -> Self {
                $error::Start($crate::RunFailure::Store(e))
            }
        }
        impl ::core::convert::From<$crate::serve::ServeError> for $error {
            fn from(e: $crate::serve::ServeError) -> Self {
                $error::Start($crate::RunFailure::Serve(e))
            }
        }
    };
}
