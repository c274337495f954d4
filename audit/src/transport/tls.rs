//! The rustls client configuration of a `tls://` target (RFC 5425): roots from the PEM CA file,
//! an optional client certificate, the server name from the target's host.

use std::sync::Arc;

use prodhcp_config::audit::{AuditHost, Endpoint};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::TlsSettings;

/// What a TLS target needs to start a handshake; the configuration is built at the first
/// connect attempt (and again at the next one while it fails, so a fixed file is picked up).
pub(crate) struct TlsSetup {
    settings: Option<TlsSettings>,
    server_name: Result<ServerName<'static>, String>,
    config: Option<Arc<ClientConfig>>,
}

impl TlsSetup {
    pub(crate) fn new(endpoint: &Endpoint, settings: Option<TlsSettings>) -> TlsSetup {
        let server_name = match &endpoint.host {
            AuditHost::Ip(ip) => Ok(ServerName::IpAddress((*ip).into())),
            AuditHost::Name(name) => ServerName::try_from(name.clone())
                .map_err(|e| format!("`{name}` is not a TLS server name: {e}")),
        };
        TlsSetup {
            settings,
            server_name,
            config: None,
        }
    }

    /// A new client session, or why not.
    pub(crate) fn connection(&mut self) -> Result<ClientConnection, String> {
        let name = self.server_name.clone()?;
        let config = match &self.config {
            Some(c) => c.clone(),
            None => {
                let Some(settings) = &self.settings else {
                    return Err("TLS target without TLS settings (no CA file configured)".into());
                };
                let c = Arc::new(build_config(settings)?);
                self.config = Some(c.clone());
                c
            }
        };
        ClientConnection::new(config, name).map_err(|e| format!("TLS: {e}"))
    }
}

fn build_config(s: &TlsSettings) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&s.ca_file)
        .map_err(|e| format!("CA file {}: {e}", s.ca_file.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("CA file {}: {e}", s.ca_file.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("CA file {}: {e}", s.ca_file.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("CA file {}: no certificate", s.ca_file.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    match (&s.cert_file, &s.key_file) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert_file), Some(key_file)) => {
            let chain: Result<Vec<_>, _> = CertificateDer::pem_file_iter(cert_file)
                .map_err(|e| format!("certificate file {}: {e}", cert_file.display()))?
                .collect();
            let chain =
                chain.map_err(|e| format!("certificate file {}: {e}", cert_file.display()))?;
            let key = PrivateKeyDer::from_pem_file(key_file)
                .map_err(|e| format!("key file {}: {e}", key_file.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))
        }
        _ => Err("a client certificate needs both cert_file and key_file".into()),
    }
}
