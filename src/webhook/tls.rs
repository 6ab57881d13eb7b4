//! Certificates: generating a CA and serving certificate (rcgen, ECDSA P-256), loading PEM files, and a
//! rustls certificate resolver that picks up renewed files without a restart.
//!
//! Reload works by polling and comparing bytes, not inotify: the kubelet updates a mounted Secret by
//! swapping a `..data` symlink, which file watches on the old paths never see.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::crypto::ring;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0}")]
    Config(String),
}

/// A CA and a serving certificate signed by it, in PEM.
pub struct Bundle {
    pub ca_cert: String,
    pub ca_key: String,
    pub cert: String,
    pub key: String,
}

/// How long a generated CA is valid.
pub const CA_VALIDITY: time::Duration = time::Duration::days(3650);
/// How long a generated serving certificate is valid: renew it (or let cert-manager) within a year.
pub const SERVING_VALIDITY: time::Duration = time::Duration::days(365);

/// Creates a CA and a serving certificate for `dns_names` (IP addresses become IP SANs), valid from an
/// hour ago (clock skew) for [`CA_VALIDITY`] and [`SERVING_VALIDITY`].
pub fn generate(dns_names: &[String], common_name: &str) -> Result<Bundle, TlsError> {
    let now = time::OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{common_name} CA"));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = now - time::Duration::hours(1);
    ca_params.not_after = now + CA_VALIDITY;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(dns_names.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + SERVING_VALIDITY;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Bundle {
        ca_cert: ca_cert.pem(),
        ca_key: ca_key.serialize_pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// The DNS names the API server may use for a webhook Service.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), TlsError> {
    let err = |e: std::io::Error| TlsError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    std::fs::write(path, contents).map_err(err)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    Ok(())
}

/// Writes `ca.crt`, `tls.crt` and `tls.key` (and `ca.key` when `with_ca_key`) into `dir`.
pub fn write_bundle(dir: &Path, bundle: &Bundle, with_ca_key: bool) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|e| TlsError::File {
        path: dir.display().to_string(),
        message: e.to_string(),
    })?;
    write_file(&dir.join("ca.crt"), &bundle.ca_cert, false)?;
    write_file(&dir.join("tls.crt"), &bundle.cert, false)?;
    write_file(&dir.join("tls.key"), &bundle.key, true)?;
    if with_ca_key {
        write_file(&dir.join("ca.key"), &bundle.ca_key, true)?;
    }
    Ok(())
}

/// Paths of a development certificate set.
pub struct DevCerts {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// Whether they were created just now.
    pub created: bool,
}

/// Uses `dir/tls.crt` + `dir/tls.key` if present, else creates a dev CA and a serving certificate for
/// localhost, 127.0.0.1 and ::1 there.
pub fn ensure_dev_certs(dir: &Path) -> Result<DevCerts, TlsError> {
    let certs = DevCerts {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        ca: dir.join("ca.crt"),
        created: false,
    };
    if certs.cert.exists() && certs.key.exists() {
        return Ok(certs);
    }
    let names = ["localhost", "127.0.0.1", "::1"].map(String::from);
    write_bundle(dir, &generate(&names, "gpu-slicer dev")?, true)?;
    Ok(DevCerts {
        created: true,
        ..certs
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Builds a signing key pair from PEM bytes, checking that the key belongs to the certificate.
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    origin: &str,
) -> Result<CertifiedKey, TlsError> {
    let bad = |message: String| TlsError::File {
        path: origin.to_string(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("certificate: {e}")))?;
    if chain.is_empty() {
        return Err(bad("no certificate in PEM".into()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad(format!("private key: {e}")))?;
    let provider = ring::default_provider();
    let ck = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| bad(format!("key does not fit certificate: {e}")))?;
    Ok(ck)
}

/// A serving certificate read from two files and re-read when they change.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Current>,
}

#[derive(Debug)]
struct Current {
    key: Arc<CertifiedKey>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

/// What a reload attempt found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Replaced,
}

impl ReloadingCert {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<ReloadingCert, TlsError> {
        let (cert_pem, key_pem) = (read(cert_path)?, read(key_path)?);
        let key = certified_key(&cert_pem, &key_pem, &cert_path.display().to_string())?;
        Ok(ReloadingCert {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new(Current {
                key: Arc::new(key),
                cert_pem,
                key_pem,
            }),
        })
    }

    /// Re-reads the files; a new valid pair replaces the old one, a broken one is an error and the
    /// old pair stays in use.
    pub fn reload(&self) -> Result<Reload, TlsError> {
        let (cert_pem, key_pem) = (read(&self.cert_path)?, read(&self.key_path)?);
        {
            let cur = self.current.read().unwrap_or_else(|p| p.into_inner());
            if cur.cert_pem == cert_pem && cur.key_pem == key_pem {
                return Ok(Reload::Unchanged);
            }
        }
        let key = certified_key(&cert_pem, &key_pem, &self.cert_path.display().to_string())?;
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        *cur = Current {
            key: Arc::new(key),
            cert_pem,
            key_pem,
        };
        Ok(Reload::Replaced)
    }

    /// The certificate in use.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .key
            .clone()
    }

    /// When the certificate in use expires (its notAfter), Unix seconds.
    pub fn not_after(&self) -> Option<i64> {
        let key = self.current();
        let leaf = key.cert.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        Some(cert.validity().not_after.timestamp())
    }

    /// Polls the files every `every` until the process ends, logging what changes and keeping
    /// `expiry` (Unix seconds of notAfter) current.
    pub fn spawn_poll(
        self: &Arc<Self>,
        every: std::time::Duration,
        expiry: prometheus_client::metrics::gauge::Gauge,
    ) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        expiry.set(this.not_after().unwrap_or(0));
        crate::webhook::reload::spawn_every(every, move || match this.reload() {
            Ok(Reload::Unchanged) => {}
            Ok(Reload::Replaced) => {
                expiry.set(this.not_after().unwrap_or(0));
                tracing::info!(cert = %this.cert_path.display(), "serving certificate reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %e, "serving certificate not reloaded; the previous one stays in use");
            }
        })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// rustls server settings: TLS 1.2 and 1.3, ring, ALPN h2 then http/1.1.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pair_loads_and_a_broken_reload_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let b = generate(&service_names("gpu-slicer", "gpu-slicer"), "gpu-slicer").unwrap();
        write_bundle(dir.path(), &b, false).unwrap();
        let rc =
            ReloadingCert::load(&dir.path().join("tls.crt"), &dir.path().join("tls.key")).unwrap();
        assert_eq!(rc.reload().unwrap(), Reload::Unchanged);
        let before = rc.current();
        std::fs::write(dir.path().join("tls.key"), "garbage").unwrap();
        assert!(rc.reload().is_err());
        assert!(Arc::ptr_eq(&before, &rc.current()));
        let b2 = generate(&["localhost".into()], "x").unwrap();
        write_bundle(dir.path(), &b2, false).unwrap();
        assert_eq!(rc.reload().unwrap(), Reload::Replaced);
        assert!(!Arc::ptr_eq(&before, &rc.current()));
    }

    #[test]
    fn expiry_is_read_from_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        write_bundle(
            dir.path(),
            &generate(&["localhost".into()], "x").unwrap(),
            false,
        )
        .unwrap();
        let rc =
            ReloadingCert::load(&dir.path().join("tls.crt"), &dir.path().join("tls.key")).unwrap();
        let not_after = rc.not_after().unwrap();
        let in_a_year = time::OffsetDateTime::now_utc() + SERVING_VALIDITY;
        assert!(
            (not_after - in_a_year.unix_timestamp()).abs() < 120,
            "{not_after}"
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let a = generate(&["a".into()], "a").unwrap();
        let b = generate(&["b".into()], "b").unwrap();
        assert!(certified_key(a.cert.as_bytes(), b.key.as_bytes(), "t").is_err());
    }
}
