//! A private CA and certificates made in the test with `rcgen`, written as
//! PEM files the way `openssl` would (README, "TLS with a private CA").

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// A CA with a server certificate for `localhost` and `127.0.0.1`.
pub struct TestPki {
    /// The CA certificate (what kiosks pin with `broker.ca_file`).
    pub ca_cert: PathBuf,
    /// The server certificate, signed by the CA.
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
}

impl TestPki {
    /// Makes a CA named `name` and its server certificate, in `dir`
    /// (`<name>-ca.crt`, `<name>-server.crt`, `<name>-server.key`).
    ///
    /// # Panics
    /// When a key cannot be generated or a file written: test code.
    pub fn generate(dir: &Path, name: &str) -> TestPki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let ca_cert = dir.join(format!("{name}-ca.crt"));
        std::fs::write(&ca_cert, ca.pem()).expect("write CA");

        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &ca).expect("server certificate");
        let server_cert = dir.join(format!("{name}-server.crt"));
        let server_key = dir.join(format!("{name}-server.key"));
        std::fs::write(&server_cert, cert.pem()).expect("write server cert");
        std::fs::write(&server_key, key.serialize_pem()).expect("write server key");
        TestPki {
            ca_cert,
            server_cert,
            server_key,
            ca,
            dir: dir.to_owned(),
        }
    }

    /// Another server certificate from this CA, for `names` only (DNS
    /// names); returns (certificate, key) paths.
    ///
    /// # Panics
    /// As [`TestPki::generate`].
    pub fn server_cert_for(&self, names: &[&str]) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, names.join(","));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.ca)
            .expect("server certificate");
        let stem = names.join("+");
        let cert_path = self.dir.join(format!("{stem}.crt"));
        let key_path = self.dir.join(format!("{stem}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    }

    /// A client certificate for `common_name` signed by this CA; returns
    /// (certificate, key) paths.
    ///
    /// # Panics
    /// As [`TestPki::generate`].
    pub fn client_cert(&self, common_name: &str) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("client key");
        let cert = params
            .signed_by(&key, &self.ca)
            .expect("client certificate");
        let cert_path = self.dir.join(format!("client-{common_name}.crt"));
        let key_path = self.dir.join(format!("client-{common_name}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write client cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write client key");
        (cert_path, key_path)
    }
}
