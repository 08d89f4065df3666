//! HTTPS (`serve.tls`): the certificate chain and key read from their PEM
//! files when the front door starts ([`load`], whose errors name the field
//! and the file), served with rustls (the ring provider; TLS 1.2 and 1.3,
//! HTTP/1.1 by ALPN). A client that speaks plain HTTP to the port gets its
//! connection closed.

use std::{path::Path, sync::Arc};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use warren::pipeline::Tls;

/// Accepts TLS connections with the front door's certificate.
#[derive(Clone)]
pub struct Acceptor(pub(crate) tokio_rustls::TlsAcceptor);

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("tls::Acceptor")
    }
}

/// Why `serve.tls` cannot be served: the field, its file, and what is
/// wrong with it.
#[derive(Debug)]
pub struct TlsError {
    /// `cert` or `key`.
    pub field: &'static str,
    /// The file the field names.
    pub file: std::path::PathBuf,
    /// What is wrong, in words.
    pub why: String,
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "serve.tls.{} ({}): {}",
            self.field,
            self.file.display(),
            self.why
        )
    }
}

impl std::error::Error for TlsError {}

/// Reads `tls`'s files and makes the acceptor.
pub fn load(tls: &Tls) -> Result<Acceptor, TlsError> {
    let problem = |field, file: &Path, why: String| TlsError {
        field,
        file: file.to_path_buf(),
        why,
    };
    let cert_pem = read(&tls.cert).map_err(|why| problem("cert", &tls.cert, why))?;
    let key_pem = read(&tls.key).map_err(|why| problem("key", &tls.key, why))?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| problem("cert", &tls.cert, format!("is not a PEM file: {error}")))?;
    if certs.is_empty() {
        return Err(problem(
            "cert",
            &tls.cert,
            "holds no certificate (a PEM `BEGIN CERTIFICATE` block)".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| {
        problem(
            "key",
            &tls.key,
            format!("holds no private key (a PKCS#8, PKCS#1 or SEC1 PEM block): {error}"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| problem("cert", &tls.cert, error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|error| {
            problem(
                "key",
                &tls.key,
                format!("does not serve with the certificate of serve.tls.cert: {error}"),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Acceptor(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

/// The file's bytes, or why they cannot be read.
fn read(file: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(file).map_err(|error| format!("cannot read it: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(cert: &Path, key: &Path) -> String {
        load(&Tls {
            cert: cert.into(),
            key: key.into(),
        })
        .unwrap_err()
        .to_string()
    }

    #[test]
    fn unreadable_or_wrong_files_are_named_with_their_field() {
        let dir = std::env::temp_dir().join(format!("warren-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let text = dir.join("text.pem");
        std::fs::write(&text, "not a certificate\n").unwrap();
        let said = error(&missing, &text);
        assert!(said.starts_with("serve.tls.cert ("), "{said}");
        assert!(
            said.contains("missing.pem") && said.contains("cannot read"),
            "{said}"
        );
        let said = error(&text, &missing);
        assert!(
            said.starts_with("serve.tls.key (") && said.contains("missing.pem"),
            "{said}"
        );
        let said = error(&text, &text);
        assert!(
            said.starts_with("serve.tls.cert (") && said.contains("no certificate"),
            "{said}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
