//! reqwest is built without a default crypto provider (to avoid compiling
//! both aws-lc and ring); every place that builds a client calls
//! [`ensure_provider`] first.

/// Installs rustls' ring provider once per process; later calls do nothing.
pub fn ensure_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
