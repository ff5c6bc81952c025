//! A certificate authority made on the spot and the certificates it signs, as PEM files in a
//! directory of the test's own: for TLS between the services, and in front of the broker,
//! Redis and Postgres.

use std::path::{Path, PathBuf};

/// A CA (its certificate in `<dir>/<name>-ca.crt`) that issues certificates.
pub struct Pki {
    dir: PathBuf,
    name: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA's certificate, PEM.
    pub ca_pem: String,
}

/// A certificate the CA issued and its key, as files and as PEM text.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    /// A new CA named `name`, writing its files into `dir` (created if missing).
    pub fn new(dir: &Path, name: &str) -> Pki {
        std::fs::create_dir_all(dir).expect("pki directory");
        let key = rcgen::KeyPair::generate().expect("ca key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca = params.self_signed(&key).expect("ca certificate");
        let ca_pem = ca.pem();
        let pki = Pki {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            issuer: rcgen::Issuer::new(params, key),
            ca_pem,
        };
        std::fs::write(pki.ca_path(), &pki.ca_pem).expect("write ca");
        pki
    }

    /// The CA certificate's file.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.crt", self.name))
    }

    /// A certificate named `name` (its common name and file names) for the DNS names or IP
    /// addresses `subject_alt_names`, usable as server and as client; key and certificate in
    /// `<dir>/<name>.key` and `<dir>/<name>.crt`, the key readable by its owner only (Postgres
    /// insists).
    pub fn issue(&self, name: &str, subject_alt_names: &[&str]) -> Issued {
        let key = rcgen::KeyPair::generate().expect("key");
        let names: Vec<String> = subject_alt_names.iter().map(|name| name.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name.to_string());
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let certificate = params.signed_by(&key, &self.issuer).expect("certificate");
        let (cert_pem, key_pem) = (certificate.pem(), key.serialize_pem());
        let cert_path = self.dir.join(format!("{name}.crt"));
        let key_path = self.dir.join(format!("{name}.key"));
        std::fs::write(&cert_path, &cert_pem).expect("write certificate");
        std::fs::write(&key_path, &key_pem).expect("write key");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).expect("key mode");
        Issued {
            cert_path,
            key_path,
            cert_pem,
            key_pem,
        }
    }
}
