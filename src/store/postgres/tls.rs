//! TLS to the database, as libpq's `sslmode` means it:
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` (the default) | when the server offers it | not checked |
//! | `require` | always | not checked, unless a CA is given: then as `verify-full` |
//! | `verify-ca`, `verify-full` | always | checked against the CA, host name included |
//!
//! The CA is `--database-ca FILE`, or libpq's `sslrootcert=FILE` in the URL's query. One
//! departure: `verify-ca` checks the host name too (rustls always does), as `verify-full`.
//! `prefer` and `require` without a CA encrypt but do not authenticate the server, exactly as
//! libpq: name a CA for that.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{DigitallySignedStruct, SignatureScheme};

use crate::net;

/// The connection settings of `url`, and the TLS connector they call for (`ca`:
/// `--database-ca`). Errors are for the operator, and never repeat the URL (it may hold a
/// password).
pub(super) fn settings(
    url: &str,
    ca: Option<&Path>,
) -> Result<(postgres::Config, MakeRustlsConnect), String> {
    let (url, verify, root_cert) = libpq_query(url)?;
    let config: postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
    let ca = match (ca, &root_cert) {
        (Some(path), _) => Some(("--database-ca", path.to_path_buf())),
        (None, Some(path)) => Some(("sslrootcert", path.clone())),
        (None, None) => None,
    };
    let builder = net::client_builder().map_err(|e| e.to_string())?;
    let tls = match ca {
        Some((flag, path)) => {
            let pem = std::fs::read(&path)
                .map_err(|e| format!("cannot read {flag} {}: {e}", path.display()))?;
            let roots = net::client_roots(&pem, flag).map_err(|e| e.to_string())?;
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None if verify => {
            return Err(
                "sslmode=verify-ca and verify-full need the CA: --database-ca or sslrootcert"
                    .into(),
            );
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(net::tls_provider())))
            .with_no_client_auth(),
    };
    Ok((config, MakeRustlsConnect::new(tls)))
}

/// The URL with libpq's `sslmode=verify-ca|verify-full` (read as `require`, and returned as
/// `true`) and `sslrootcert` (returned) taken out of its query: the driver knows neither.
/// Key=value settings pass as they are.
fn libpq_query(url: &str) -> Result<(String, bool, Option<PathBuf>), String> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let Some((base, query)) = url.split_once('?').filter(|_| is_url) else {
        return Ok((url.to_string(), false, None));
    };
    let (mut verify, mut root_cert) = (false, None);
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("sslmode", "verify-ca" | "verify-full")) => {
                verify = true;
                kept.push("sslmode=require".to_string());
            }
            Some(("sslrootcert", path)) => {
                let path = percent_decoded(path)
                    .ok_or_else(|| "sslrootcert is not a valid percent-encoded path".to_string())?;
                root_cert = Some(PathBuf::from(path));
            }
            _ => kept.push(pair.to_string()),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, verify, root_cert))
}

/// `%XX` escapes decoded (a path in a URL's query).
fn percent_decoded(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// `prefer` and `require` without a CA: any certificate is taken (as libpq does), but the
/// handshake's signatures are still checked against it, so the session is encrypted to the
/// holder of that certificate's key.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_modes_the_driver_lacks_are_read_and_taken_out() {
        let (url, verify, root) = libpq_query(
            "postgres://u@db:5432/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .expect("valid");
        assert_eq!(
            url,
            "postgres://u@db:5432/app?sslmode=require&application_name=x"
        );
        assert!(verify);
        assert_eq!(root, Some(PathBuf::from("/etc/ca.pem")));
        let (url, verify, root) = libpq_query("host=db sslmode=require").expect("valid");
        assert_eq!(
            (url.as_str(), verify, root),
            ("host=db sslmode=require", false, None)
        );
    }

    #[test]
    fn verifying_without_a_ca_is_refused_and_says_what_is_missing() {
        let e = settings("postgres://u@db/app?sslmode=verify-full", None)
            .err()
            .expect("refused");
        assert!(e.contains("--database-ca"), "{e}");
        let e = settings(
            "postgres://u:secret@db/app?sslrootcert=/nonexistent/ca.pem",
            None,
        )
        .err()
        .expect("refused");
        assert!(e.contains("sslrootcert /nonexistent/ca.pem"), "{e}");
        assert!(!e.contains("secret"), "{e}");
    }
}
