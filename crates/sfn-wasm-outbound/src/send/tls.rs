//! The host's TLS client settings, and the CA files (`ca_file`) that add to them.

use std::sync::Arc;

/// The TLS client configuration: Mozilla's roots (webpki-roots, so that a host needs no
/// CA bundle of its own), ring, TLS 1.2 and 1.3.
pub fn tls_connector() -> Result<tokio_rustls::TlsConnector, rustls::Error> {
    tls_connector_with(Vec::new())
}

/// [`tls_connector`], also trusting `extra_roots` (an activity's `ca_file`).
pub(crate) fn tls_connector_with(
    extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> Result<tokio_rustls::TlsConnector, rustls::Error> {
    Ok(tokio_rustls::TlsConnector::from(Arc::new(
        tls_client_config(extra_roots)?,
    )))
}

/// The host's TLS client settings: Mozilla's roots (webpki-roots) and `extra_roots` (a
/// `ca_file`), ring, TLS 1.2 and 1.3. Every TLS client of the host (guests' outbound
/// requests, the OTLP exporter) uses them.
pub fn tls_client_config(
    extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for root in extra_roots {
        roots.add(root)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// Reads a PEM file of CA certificates (`ca_file`): every certificate in it, each one a
/// root rustls accepts.
///
/// # Errors
/// A message naming the file: unreadable, no certificate in it, or one rustls rejects.
pub fn read_ca_file(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let bytes =
        std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let certificates = rustls::pki_types::CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("{} is not PEM certificates: {err}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!(
            "{} holds no certificate: give a PEM file with -----BEGIN CERTIFICATE----- blocks",
            path.display()
        ));
    }
    let mut store = rustls::RootCertStore::empty();
    for certificate in &certificates {
        store.add(certificate.clone()).map_err(|err| {
            format!(
                "{} holds a certificate that cannot be a root: {err}",
                path.display()
            )
        })?;
    }
    Ok(certificates)
}
